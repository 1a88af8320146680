"""Parse a Prometheus text exposition on stdin with the reference client's parser
(prometheus_client) and print what it understood as JSON:
{"families": {name: type}, "samples": [{"name", "labels", "value"}]}.
A malformed exposition makes the parser raise, and this script exit non-zero."""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    families = {}
    samples = []
    for family in text_string_to_metric_families(sys.stdin.read()):
        families[family.name] = family.type
        for s in family.samples:
            value = s.value
            if isinstance(value, float) and math.isinf(value):
                value = str(value)
            samples.append({"name": s.name, "labels": dict(s.labels), "value": value})
    json.dump({"families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
