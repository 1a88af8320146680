"""Console benchmark (not a test), run by hand against a running server:

    TIDEMARK_URL=http://127.0.0.1:7700 TIDEMARK_ADMIN_TOKEN=... \
        python3 tests/py/console_bench.py [--rate 1000] [--seconds 20]

1. Live view under load: opens the live view of a bucket in headless Chromium, posts `--rate`
   mutations/s through the API for `--seconds` from a thread, and measures in the page the
   frames per second (requestAnimationFrame + performance.now(): frames per 1 s window, median
   and 5th percentile over the windows, and the longest frame), the events the page counted
   and the rows left in the DOM.
2. First load: `/ui/`, the CSS and every JS module the page loads (the shell, then the default
   page), and every page module, requested with `Accept-Encoding: gzip`; bytes on the wire, and
   what gzip would make of them in case the server sends them uncompressed.
"""

import argparse
import gzip
import http.client
import re
import statistics
import threading
import time
import urllib.parse

from selenium.webdriver.common.by import By

from console_browser import ADMIN, URL, api, browser, login, visible, wait

BUCKET = "console-bench"
KEYS = 200

# Records each frame's start in the page; read back at the end.
FRAME_PROBE = """
window.__frames = [];
const tick = (t) => { window.__frames.push(t); window.__probe = requestAnimationFrame(tick); };
window.__probe = requestAnimationFrame(tick);
"""


def post_load(rate, seconds, stop, sent):
    """`rate` mutations/s for `seconds`, 10 batches a second, paced by a clock, not sleeps
    that drift."""
    batch = max(1, rate // 10)
    start = time.monotonic()
    n = 0
    while not stop.is_set() and time.monotonic() - start < seconds:
        mutations = [{"op": "put", "bucket": BUCKET, "key": f"k{(n + i) % KEYS:04d}", "size": n + i,
                      "etag": f"e{n + i}"} for i in range(batch)]
        status, answer = api("POST", "/v1/mutations", {"mutations": mutations})
        assert status == 200, (status, answer)
        n += batch
        sent[0] = n
        ahead = start + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def windows(frames):
    """Frames per 1 s window (whole windows only), and the longest gap between frames."""
    if len(frames) < 2:
        return [], 0.0
    first = frames[0]
    count = int((frames[-1] - first) // 1000)
    fps = [0] * count
    for t in frames:
        w = int((t - first) // 1000)
        if w < count:
            fps[w] += 1
    longest = max(b - a for a, b in zip(frames, frames[1:]))
    return fps, longest


def busy(driver):
    """Seconds the page's main thread spent so far, by kind (Chrome's Performance metrics)."""
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    names = {"TaskDuration": "tasks", "ScriptDuration": "script", "LayoutDuration": "layout",
             "RecalcStyleDuration": "style"}
    return {names[m["name"]]: m["value"] for m in metrics if m["name"] in names}


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def live_view(rate, seconds, stream=True):
    """The live view under `rate` mutations/s; with `stream` False, the peer: the same page
    and the same load, the stream not started (what the machine leaves an idle page)."""
    driver = browser()
    try:
        login(driver, ADMIN, "watch")
        visible(driver, "#watch-bucket").send_keys(BUCKET)
        if stream:
            driver.find_element(By.CSS_SELECTOR, "#watch-start").click()
            wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#watch-status").text == "live", 20)
        driver.execute_cdp_cmd("Performance.enable", {})
        before = busy(driver)
        driver.execute_script(FRAME_PROBE)
        stop, sent = threading.Event(), [0]
        poster = threading.Thread(target=post_load, args=(rate, seconds, stop, sent))
        poster.start()
        poster.join(seconds + 30)
        stop.set()
        # Let the page take the last events before reading its figures.
        deadline = time.monotonic() + 10
        while stream and time.monotonic() < deadline:
            if int(driver.find_element(By.CSS_SELECTOR, "#watch-count").text) >= sent[0]:
                break
            time.sleep(0.2)
        frames = driver.execute_script("cancelAnimationFrame(window.__probe); return window.__frames")
        spent = {k: v - before[k] for k, v in busy(driver).items()}
        received = int(driver.find_element(By.CSS_SELECTOR, "#watch-count").text)
        rows = driver.execute_script("return document.querySelectorAll('#watch-rows tr').length")
        nodes = driver.execute_script("return document.getElementsByTagName('*').length")
    finally:
        driver.quit()
    fps, longest = windows(frames)
    what = "live view" if stream else "peer (same page and load, not streaming)"
    print(f"{what}: {sent[0]} mutations posted in {seconds} s ({sent[0] / seconds:.0f}/s), "
          f"{received} counted by the page")
    if fps:
        print(f"  frames/s over {len(fps)} 1-s windows: median {statistics.median(fps):.0f}, "
              f"5th percentile {percentile(fps, 5)}, min {min(fps)}; longest frame {longest:.0f} ms")
    print("  the page's main thread, seconds busy: " + ", ".join(f"{k} {v:.2f}" for k, v in spent.items()))
    print(f"  DOM at the end: {rows} event rows, {nodes} elements in the document")
    return statistics.median(fps) if fps else 0


def fetch(path):
    """(wire bytes, decoded text, content-encoding) of GET `path` with gzip accepted."""
    parsed = urllib.parse.urlparse(URL)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    assert resp.status == 200, (path, resp.status)
    encoding = resp.getheader("content-encoding") or "identity"
    body = gzip.decompress(raw) if encoding == "gzip" else raw
    return len(raw), body.decode(), encoding


IMPORTS = re.compile(r"""(?:import|from)\s*\(?\s*["']([^"']+\.js)["']""")


def modules(start, text):
    """Relative ES module imports of the module at `start` (static and dynamic)."""
    base = start.rsplit("/", 1)[0]
    return [urllib.parse.urljoin(base + "/", m) for m in IMPORTS.findall(text)]


def first_load():
    total_wire = total_raw = total_gzip = 0
    seen = {}
    index_wire, index, enc = fetch("/ui/")
    seen["/ui/"] = (index_wire, len(index.encode()), len(gzip.compress(index.encode())), enc)
    todo = re.findall(r"""(?:href|src)="(/ui/assets/[^"]+)\"""", index)
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        wire, text, enc = fetch(path)
        seen[path] = (wire, len(text.encode()), len(gzip.compress(text.encode())), enc)
        if path.endswith(".js"):
            todo += modules(path, text)
    shell = {"/ui/", "/ui/assets/style.css", "/ui/assets/js/app.js", "/ui/assets/js/api.js",
             "/ui/assets/js/ui.js", "/ui/assets/js/pages/watch.js"}
    print("first load (GET with Accept-Encoding: gzip):")
    for path, (wire, raw, gz, enc) in seen.items():
        print(f"  {path:45} {wire:7} B on the wire ({enc}), {raw:7} B raw, {gz:6} B gzipped")
        total_wire += wire
        total_raw += raw
        total_gzip += gz
    first = [seen[p] for p in shell if p in seen]
    print(f"  sign-in + live view (index, CSS, app/api/ui, watch page): "
          f"{sum(s[0] for s in first)} B on the wire, {sum(s[2] for s in first)} B gzipped")
    print(f"  every asset ({len(seen)} files): {total_wire} B on the wire, {total_raw} B raw, "
          f"{total_gzip} B gzipped")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="mutations per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--skip-live", action="store_true", help="only the first-load figures")
    args = parser.parse_args()
    first_load()
    if not args.skip_live:
        peer = live_view(args.rate, args.seconds, stream=False)
        live = live_view(args.rate, args.seconds)
        if peer:
            print(f"live view / peer, median frames/s: {live / peer:.2f}")


if __name__ == "__main__":
    main()
