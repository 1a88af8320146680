#!/usr/bin/env python3
"""Browser tests of the console's operator pages: subscriptions (dead letters and redrive),
filters (upload of a WAT module, test on the last events) and what a read-only token sees.

  console_ops.py dead_letters_redrive | filter_test | read_only

Run by tests/console.rs against a fresh server (see console_browser.py for the environment).
"""

import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from console_browser import (api, clickable, console_errors, login, make_token, run, shot,
                             visible, wait, ADMIN, URL)

BUCKET = "console-ops"
#: Bound of every wait for something the server does in milliseconds.
WAIT = 30


class Receiver:
    """A webhook endpoint on loopback that fails with 500 until `healthy` is set, and records
    the `webhook-id` (the event id) of every request it accepted."""

    def __init__(self):
        self.healthy = False
        self.delivered = set()
        self.failed = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.healthy:
                    outer.delivered.add(self.headers.get("webhook-id"))
                    self.send_response(200)
                    body = b"ok"
                else:
                    outer.failed += 1
                    self.send_response(500)
                    body = b"receiver is down for the test"
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def stop(self):
        self.server.shutdown()


def mutate(keys, **extra):
    """One `put` per key in one request; the acknowledged event ids, in order."""
    muts = [dict({"op": "put", "bucket": BUCKET, "key": k, "size": 100 + i}, **extra)
            for i, k in enumerate(keys)]
    status, answer = api("POST", "/v1/mutations", {"mutations": muts})
    assert status in (200, 201), (status, answer)
    return [r["event_id"] for r in answer["results"]]


def failing_subscription(name, receiver):
    """A webhook subscription from now on that dead-letters after two quick attempts."""
    spec = {
        "name": name,
        "sink": {"type": "webhook", "url": receiver.url},
        "retry": {"max_attempts": 2, "initial_backoff_ms": 20, "max_backoff_ms": 100},
        # Keep the circuit out of the way: the test is about attempts.
        "circuit": {"failure_threshold": 100, "open_ms": 300},
    }
    status, answer = api("POST", "/v1/subscriptions", spec)
    assert status == 201, (status, answer)


def dead_letters(name, count):
    """Wait until the subscription's queue holds `count` letters; the letters."""
    deadline = time.time() + WAIT
    while True:
        status, page = api("GET", f"/v1/subscriptions/{name}/dead-letters?limit=1000")
        assert status == 200, (status, page)
        if page["count"] == count:
            return page["dead_letters"]
        assert time.time() < deadline, f"{page['count']} dead letters, not {count}"
        time.sleep(0.1)


def text(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css).text


# ---- dead letters and redrive ------------------------------------------------------------

def dead_letters_redrive(driver):
    receiver = Receiver()
    failing_subscription("hooks", receiver)
    acked = mutate([f"dl/{i}.json" for i in range(6)])
    letters = dead_letters("hooks", len(acked))
    assert {l["event_id"] for l in letters} == set(acked), letters

    login(driver, ADMIN, "subscriptions")
    row = visible(driver, "#subscriptions tr[data-name='hooks']")
    wait(driver, lambda d: text(d, "#subscriptions tr[data-name='hooks'] .dead-count") == "6", WAIT,
         "the list does not show 6 dead letters")
    # Two polls at least, so the lag chart has a line.
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-name='hooks'] svg.spark polyline"),
         WAIT, "no lag sparkline")
    shot(driver, "subscriptions")

    # Open it with the keyboard: the row is focusable and Enter opens it.
    row.send_keys("\n")
    visible(driver, "#dead-letter-table")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dead-letter-table tr.dead-letter")) == 6,
         WAIT, "the page does not list 6 dead letters")
    # The page refreshes its status every 2 s: find the row right before clicking it.
    clickable(driver, "#dead-letter-table tr.dead-letter").click()
    visible(driver, "#attempt")
    assert text(driver, "#attempt-status") == "500", text(driver, "#attempt-status")
    assert text(driver, "#attempt-count") == "2", text(driver, "#attempt-count")
    assert "receiver is down" in text(driver, "#attempt-response"), text(driver, "#attempt-response")
    shot(driver, "dead-letters")

    receiver.healthy = True
    clickable(driver, "#redrive-all").click()
    wait(driver, lambda d: d.switch_to.alert, 5, "no confirmation asked").accept()
    wait(driver, lambda d: "Redriving 6" in text(d, "#redrive-result"), WAIT, "no redrive result")
    deadline = time.time() + WAIT
    while not set(acked) <= receiver.delivered:
        assert time.time() < deadline, f"delivered {len(receiver.delivered)} of {len(acked)}"
        time.sleep(0.1)
    wait(driver, lambda d: text(d, "#dead-letter-count") == "0", WAIT, "the page still counts letters")
    wait(driver, lambda d: "No dead letters" in text(d, "#dead-letters"), WAIT, "letters still listed")
    dead_letters("hooks", 0)
    receiver.stop()
    list_pages(driver)


def list_pages(driver):
    """31 subscriptions: the list shows 25, then the other 6, a page at a time by name."""
    for i in range(30):
        status, answer = api("POST", "/v1/subscriptions", {
            "name": f"zz-{i:02d}", "sink": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
        assert status == 201, (status, answer)
    driver.get(f"{URL}/ui/#/subscriptions")
    rows = "#subscriptions tbody tr"
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 25, WAIT, "no first page of 25")
    assert driver.find_elements(By.CSS_SELECTOR, "#subscriptions tr[data-name='hooks']")
    clickable(driver, "#subs-next").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 6, WAIT, "no second page of 6")
    names = [r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, rows)]
    assert names == [f"zz-{i:02d}" for i in range(24, 30)], names
    assert driver.find_element(By.CSS_SELECTOR, "#subs-next").get_attribute("disabled") is not None
    clickable(driver, "#subs-prev").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 25, WAIT, "no way back")


# ---- filter upload and test --------------------------------------------------------------

#: Keeps events whose key starts with "keep/" (ABI v1: one host call for the key).
KEEP_PREFIX_WAT = """
;; Keep keys under keep/ (written by the console test; assembled by the page).
(module
  (import "tidemark" "key" (func $key (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "keep/")
  (func (export "tidemark_abi_version") (result i32) i32.const 1)
  (func (export "filter") (result i32)
    (local $n i32)
    (local.set $n (call $key (i32.const 64) (i32.const 1024)))
    (if (i32.lt_s (local.get $n) (i32.const 5)) (then (return (i32.const 0))))
    ;; "keep" as one word, then the slash.
    (if (i32.ne (i32.load (i32.const 64)) (i32.load (i32.const 0))) (then (return (i32.const 0))))
    (i32.eq (i32.load8_u offset=68 (i32.const 0)) (i32.load8_u offset=4 (i32.const 0)))))
"""


def filter_test(driver):
    # Ten kept events first, then 50 of which 15 are kept: the last 50 match at 30 %, all
    # 60 at 41.7 %, so a test over the wrong events shows.
    mutate([f"keep/early-{i}" for i in range(10)])
    time.sleep(0.05)  # the last 50 are later in time than the first 10, on any partition
    newest = mutate([f"keep/{i}" if i % 10 < 3 else f"drop/{i}" for i in range(50)])

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "keep-prefix.wat")
        with open(path, "w") as f:
            f.write(KEEP_PREFIX_WAT)
        login(driver, ADMIN, "filters")
        visible(driver, "#upload-form")
        driver.find_element(By.CSS_SELECTOR, "#upload-file").send_keys(path)
        wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#upload-name").get_attribute("value")
             == "keep-prefix", 5, "the name is not taken from the file")
        clickable(driver, "#upload-filter").click()
        visible(driver, "#version-table")
    assert "keep-prefix@1" in text(driver, "#version-table")
    status, f = api("GET", "/v1/filters/keep-prefix")
    assert status == 200 and f["latest"] == 1, (status, f)
    driver.get(f"{URL}/ui/#/filters")
    visible(driver, "#filters tr[data-name='keep-prefix']")
    shot(driver, "filters")

    driver.get(f"{URL}/ui/#/filters/keep-prefix")
    last = visible(driver, "#test-last")
    last.clear()
    last.send_keys("50")
    clickable(driver, "#run-test").click()
    rate = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#match-rate"), WAIT, "no result")[0]
    shown = float(rate.get_attribute("data-rate"))
    rows = driver.find_elements(By.CSS_SELECTOR, "#test-results tbody tr")
    assert len(rows) == 50, len(rows)
    assert "early" not in text(driver, "#test-results"), "the test ran on older events"
    assert text(driver, "#test-results tbody tr:first-child").split()[3] in ("keep", "drop")
    shot(driver, "filter-test")

    # The API's answer for the same test: the same filter on the last 50 events of the log,
    # which are exactly the 50 posted last.
    status, answer = api("POST", "/v1/filters/keep-prefix@1/test", {"last": 50, "max_results": 100})
    assert status == 200, (status, answer)
    assert answer["evaluated"] == 50 and answer["kept"] == 15, answer
    assert {r["event_id"] for r in answer["results"]} == set(newest), answer["results"]
    assert shown == answer["match_rate"], (shown, answer["match_rate"])
    assert rate.text == "30.0%", rate.text
    attach_and_roll_back(driver)


def attach_and_roll_back(driver):
    """Pin a subscription to version 1 from the page, then delete version 2 (the newest)."""
    status, _ = api("POST", "/v1/filters/keep-prefix", bytes.fromhex(KEEP_ALL_WASM),
                    content_type="application/wasm")
    assert status == 201, status
    status, _ = api("POST", "/v1/subscriptions", {
        "name": "filtered", "sink": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
    assert status == 201, status
    driver.get(f"{URL}/ui/#/filters/keep-prefix")
    driver.refresh()
    visible(driver, "#attach-form")
    Select(driver.find_element(By.CSS_SELECTOR, "#attach-subscription")).select_by_value("filtered")
    Select(driver.find_element(By.CSS_SELECTOR, "#attach-version")).select_by_value("1")
    clickable(driver, "#attach-filter").click()
    wait(driver, lambda d: api("GET", "/v1/subscriptions/filtered")[1].get("filter") == "keep-prefix@1",
         WAIT, "the subscription is not pinned to version 1")
    clickable(driver, ".delete-version").click()
    wait(driver, lambda d: d.switch_to.alert, 5, "no confirmation asked").accept()
    wait(driver, lambda d: api("GET", "/v1/filters/keep-prefix")[1]["latest"] == 1, WAIT,
         "version 2 is still the latest")


# ---- read only ---------------------------------------------------------------------------

#: Controls a `read` token must not be offered (their `data-scope`).
WRITE_SCOPES = ("subscriptions", "filters", "replay", "ingest", "admin")


def no_controls(driver, page):
    found = [(e.get_attribute("id") or e.get_attribute("class"), e.get_attribute("data-scope"))
             for e in driver.find_elements(By.CSS_SELECTOR, "[data-scope]")
             if e.get_attribute("data-scope") in WRITE_SCOPES]
    assert not found, f"{page} offers a read-only token: {found}"


def read_only(driver):
    receiver = Receiver()
    failing_subscription("hooks", receiver)
    mutate(["ro/a", "ro/b"])
    dead_letters("hooks", 2)
    status, _ = api("POST", "/v1/filters/keep-all", bytes.fromhex(KEEP_ALL_WASM), content_type="application/wasm")
    assert status == 201, status
    reader = make_token(["read"])

    login(driver, reader, "subscriptions")
    visible(driver, "#subscriptions tr[data-name='hooks']")
    wait(driver, lambda d: text(d, "#subscriptions tr[data-name='hooks'] .dead-count") == "2", WAIT,
         "no dead letters shown")
    no_controls(driver, "subscriptions")
    driver.get(f"{URL}/ui/#/subscriptions/hooks")
    visible(driver, "#dead-letter-table tr.dead-letter").click()
    visible(driver, "#attempt")
    assert not driver.find_elements(By.CSS_SELECTOR, "#redrive-all, .redrive-one")
    no_controls(driver, "a subscription")
    shot(driver, "read-only")

    driver.get(f"{URL}/ui/#/filters")
    visible(driver, "#filters tr[data-name='keep-all']")
    assert not driver.find_elements(By.CSS_SELECTOR, "#upload-form, #upload-file")
    no_controls(driver, "filters")
    driver.get(f"{URL}/ui/#/filters/keep-all")
    visible(driver, "#version-table")
    assert not driver.find_elements(By.CSS_SELECTOR, "#run-test, #attach-filter, .delete-version")
    no_controls(driver, "a filter")

    driver.get(f"{URL}/ui/#/jobs")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"), WAIT, "no jobs page")
    time.sleep(0.5)  # the page's lists load after its heading
    no_controls(driver, "jobs")

    # The API refuses them if called anyway.
    refused = {
        "redrive": api("POST", "/v1/subscriptions/hooks/dead-letters/redrive", {}, token=reader),
        "upload": api("POST", "/v1/filters/sneaky", bytes.fromhex(KEEP_ALL_WASM), token=reader,
                      content_type="application/wasm"),
        "restore": api("POST", "/v1/restores", {"bucket": BUCKET, "at": "2020-01-01T00:00:00Z"},
                       token=reader),
    }
    for what, (status, answer) in refused.items():
        assert status == 403, (what, status, answer)
    assert dead_letters("hooks", 2)
    receiver.stop()


#: plugins/examples/keep_all.wat as a binary module (version 1, keeps every event).
KEEP_ALL_WASM = (
    "0061736d010000000105016000017f03030200000503010001072a03066d656d6f7279020014746964656d6172"
    "6b5f6162695f76657273696f6e00000666696c74657200010a0b02040041010b040041010b"
)

def checked(scenario):
    """`scenario`, then no uncaught error or failed request logged by the page."""
    def body(driver):
        scenario(driver)
        # The browser asks for /favicon.ico on its own; that is the shell's, not these pages'.
        errors = [e for e in console_errors(driver) if "/favicon.ico" not in e["message"]]
        assert not errors, f"the page logged errors: {errors}"
    return body


if __name__ == "__main__":
    run({"dead_letters_redrive": checked(dead_letters_redrive), "filter_test": checked(filter_test),
         "read_only": checked(read_only)})
