"""Browser scenarios of the console's live view, objects and restore pages (run by
tests/console.rs against a real server): `python3 console_live.py live_view|restore|objects`.

Each scenario writes through the public API as the test (not the page), then checks what a
user sees on the page, and compares it with the API's own answer where there is one.
"""

import time
from datetime import datetime, timezone

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from console_browser import ADMIN, api, console_errors, login, run, shot, visible, wait


def mutate(mutations):
    """Post `mutations` in one batch; each one's {event_id, partition, offset}."""
    status, answer = api("POST", "/v1/mutations", {"mutations": mutations})
    assert status == 200, (status, answer)
    for r in answer["results"]:
        assert "error" not in r, answer
    return answer["results"]


def put(bucket, key, size, etag, **extra):
    return {"op": "put", "bucket": bucket, "key": key, "size": size, "etag": etag, **extra}


def delete(bucket, key):
    return {"op": "delete", "bucket": bucket, "key": key}


def instant():
    """Now as RFC 3339 with µs, between two writes (log append times are this machine's)."""
    time.sleep(0.3)
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.3)
    return at


def text(driver, css):
    """The element's text, "" while the page replaces it (a remount after a hash change)."""
    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except StaleElementReferenceException:
        return ""


def goto(driver, hash_):
    """Another page of the console without reloading it (the session stays)."""
    driver.execute_script("window.location.hash = arguments[0]", hash_)


def no_errors(driver):
    # The browser asks for /favicon.ico by itself; the console has none.
    errors = [e for e in console_errors(driver) if "favicon.ico" not in e["message"]]
    assert not errors, errors


# --- live view -------------------------------------------------------------------------------

KEYS = [f"photos/img-{i}.jpg" for i in range(5)]


def live_view(driver):
    bucket = "live-view"
    login(driver, ADMIN, "watch")
    visible(driver, "#watch-bucket").send_keys(bucket)
    driver.find_element(By.CSS_SELECTOR, "#watch-start").click()
    wait(driver, lambda d: text(d, "#watch-status") == "live", 20, "the stream did not open")

    # 100 mutations, 20 per key, interleaved across keys, in ten requests; each key's ETags
    # in posting order.
    posted = {k: [] for k in KEYS}
    positions = {}
    for batch in range(10):
        mutations = []
        for i in range(10):
            n = batch * 10 + i
            key, round_ = KEYS[n % 5], n // 5
            etag = f"{n % 5}-{round_:02d}"
            mutations.append(put(bucket, key, 1000 + round_, etag))
            posted[key].append(etag)
        for m, r in zip(mutations, mutate(mutations)):
            positions[m["etag"]] = (r["partition"], r["offset"])

    wait(driver, lambda d: text(d, "#watch-count") == "100", 30,
         "the page did not count 100 events")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#watch-rows tr")) == 100, 10)
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#watch-rows tr')]"
        ".map(r => [r.dataset.key, r.cells[4].textContent])")
    seen = {k: [] for k in KEYS}
    for key, etag in reversed(rows):  # newest first on the page
        seen[key].append(etag)
    assert seen == posted, f"per-key order differs:\n{seen}\n!=\n{posted}"
    shot(driver, "watch")

    # The 8th change of img-3 (a put over the 7th): by click; another by keyboard.
    check_detail(driver, "3-07", "3-06", positions["3-07"], click=True)
    check_detail(driver, "1-12", "1-11", positions["1-12"], click=False)
    shot(driver, "watch-detail")

    # Pause: nothing arrives; Resume: what was posted meanwhile, nothing twice.
    driver.find_element(By.CSS_SELECTOR, "#watch-pause").click()
    wait(driver, lambda d: text(d, "#watch-status") == "paused", 10)
    mutate([put(bucket, KEYS[0], 5000 + i, f"p-{i}") for i in range(5)])
    time.sleep(0.5)
    assert text(driver, "#watch-count") == "100", "events arrived while paused"
    driver.find_element(By.CSS_SELECTOR, "#watch-resume").click()
    wait(driver, lambda d: text(d, "#watch-count") == "105", 20, "resume missed events")
    time.sleep(0.3)
    assert text(driver, "#watch-count") == "105", "resume repeated events"
    no_errors(driver)


def check_detail(driver, etag, previous, position, click):
    row = driver.find_element(By.XPATH, f"//tbody[@id='watch-rows']/tr[td[5]='{etag}']")
    if click:
        row.click()
    else:
        row.send_keys(Keys.ENTER)  # focuses the row, then Enter opens it
    wait(driver, lambda d: f"-{etag[0]}.jpg" in text(d, "#watch-detail h2"), 10)
    before = text(driver, "#watch-diff tr[data-field=etag] td.before")
    after = text(driver, "#watch-diff tr[data-field=etag] td.after")
    assert (before, after) == (previous, etag), (before, after)
    for changed in ("etag", "size", "sequence"):
        cls = driver.find_element(By.CSS_SELECTOR, f"#watch-diff tr[data-field={changed}]")
        assert "changed" in cls.get_attribute("class"), f"{changed} not marked as changed"
    unchanged = driver.find_element(By.CSS_SELECTOR, "#watch-diff tr[data-field=content_type]")
    assert "changed" not in (unchanged.get_attribute("class") or "")
    partition, offset = position
    where = text(driver, "#watch-position")
    assert f"partition {partition}, offset {offset}" in where, where
    assert f'"etag": "{etag}"' in text(driver, "#watch-detail pre.json")


# --- restore ---------------------------------------------------------------------------------

def listing(bucket, at=None):
    """Every object of `bucket` (now, or at `at`) through the API, as comparable tuples."""
    path = f"/v1/objects?bucket={bucket}&limit=10000" + (f"&at={at}" if at else "")
    status, answer = api("GET", path)
    assert status == 200, (status, answer)
    return sorted((o["key"], o["size"], o["etag"], o["content_type"], tuple(sorted(o["metadata"].items())),
                   tuple(sorted(o["tags"].items()))) for o in answer["objects"])


def page_rows(driver):
    """The objects table on the page: (key, size, etag) per row."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#objects-table tbody tr')]"
        ".map(r => [r.dataset.key, r.cells[1].textContent, r.cells[2].textContent])")


def all_page_rows(driver):
    """Every row of the listing, following Next page until it is disabled."""
    rows = page_rows(driver)
    while driver.find_element(By.CSS_SELECTOR, "#objects-next").is_enabled():
        first = rows[-1][0]
        driver.find_element(By.CSS_SELECTOR, "#objects-next").click()
        wait(driver, lambda d: page_rows(d) and page_rows(d)[0][0] > first, 20, "next page")
        rows += page_rows(driver)
    return sorted(tuple(r) for r in rows)


def list_on_page(driver, bucket, at):
    """List `bucket` at `at` ("" for now) with the objects form; the caption says which."""
    if not driver.execute_script("return location.hash").startswith("#/objects"):
        goto(driver, f"#/objects?bucket={bucket}")
        wait(driver, lambda d: "now." in text(d, "#objects-caption"), 30, "no listing")
    for name, value in (("bucket", bucket), ("at", at)):
        box = visible(driver, f"#objects-{name}")
        box.clear()
        box.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#objects-list").click()
    want = "as of" if at else "now."
    wait(driver, lambda d: want in text(d, "#objects-caption")
         and d.find_element(By.CSS_SELECTOR, "#objects-table").get_attribute("data-at") == (at or "now"),
         30, f"no listing at {at or 'now'}")
    return all_page_rows(driver)


def restore(driver):
    bucket = "restore-me"
    mutate([put(bucket, "a.jpg", 1, "a1"), put(bucket, "b.jpg", 2, "b1"),
            put(bucket, "c.jpg", 3, "c1", metadata={"team": "ml"})])
    at = instant()
    mutate([put(bucket, "a.jpg", 10, "a2"), delete(bucket, "b.jpg"),
            put(bucket, "c.jpg", 3, "c1", metadata={"team": "ops"}), put(bucket, "d.jpg", 4, "d1")])
    assert listing(bucket) != listing(bucket, at)

    login(driver, ADMIN, "jobs")
    visible(driver, "#restore-bucket").send_keys(bucket)
    driver.find_element(By.CSS_SELECTOR, "#restore-at").send_keys(at)
    assert not driver.find_element(By.CSS_SELECTOR, "#restore-start").is_enabled(), \
        "Start before a dry run"
    driver.find_element(By.CSS_SELECTOR, "#restore-dry-run").click()
    visible(driver, "#restore-plan")
    counts = {a: text(driver, f"#restore-plan tr[data-action={a}] td.count")
              for a in ("recreate", "revert", "delete", "metadata", "tags")}
    assert counts == {"recreate": "1", "revert": "1", "delete": "1", "metadata": "1", "tags": "0"}, counts
    assert "b.jpg" in text(driver, "#restore-plan tr[data-action=recreate]")
    assert "d.jpg" in text(driver, "#restore-plan tr[data-action=delete]")
    shot(driver, "jobs-plan")

    driver.find_element(By.CSS_SELECTOR, "#restore-start").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#job-state[data-state=succeeded]"), 60,
         "the restore did not succeed")
    bar = driver.find_element(By.CSS_SELECTOR, "#job-progress-bar")
    assert bar.get_attribute("value") == bar.get_attribute("max") == "4", \
        (bar.get_attribute("value"), bar.get_attribute("max"))
    wait(driver, lambda d: "succeeded" in text(d, "#jobs-table tbody"), 10, "job not listed")
    shot(driver, "jobs-done")

    assert listing(bucket) == listing(bucket, at), "the API's now differs from the instant"
    now_rows = list_on_page(driver, bucket, "")
    then_rows = list_on_page(driver, bucket, at)
    assert now_rows == then_rows, (now_rows, then_rows)
    assert [r[0] for r in now_rows] == ["a.jpg", "b.jpg", "c.jpg"], now_rows
    no_errors(driver)


# --- objects ---------------------------------------------------------------------------------

def objects(driver):
    bucket = "objects-demo"
    keys = [f"doc-{i:03d}" for i in range(55)]
    mutate([put(bucket, k, i, f"v1-{i}") for i, k in enumerate(keys)])
    at = instant()
    mutate([delete(bucket, k) for k in keys[:5]] + [put(bucket, "new-1", 7, "n1")]
           + [put(bucket, "doc-010", 100, "v2"), put(bucket, "doc-010", 200, "v3")])

    def expected(at_=None):
        return sorted((k, str(size), etag) for k, size, etag, *_ in listing(bucket, at_))

    login(driver, ADMIN, "objects")
    now_rows = list_on_page(driver, bucket, "")
    assert now_rows == expected(), ("the page's now differs from the API's", now_rows, expected())
    assert len(now_rows) == 51 and ("doc-010", "200", "v3") in now_rows
    then_rows = list_on_page(driver, bucket, at)
    assert then_rows == expected(at), "the page's instant differs from the API's"
    assert len(then_rows) == 55 and ("doc-010", "10", "v1-10") in then_rows
    assert ("new-1", "7", "n1") not in then_rows
    driver.find_element(By.CSS_SELECTOR, "#objects-prev").click()
    wait(driver, lambda d: page_rows(d)[0][0] == "doc-000", 20, "previous page")
    shot(driver, "objects")

    # History of a changed key, then of one deleted since the instant.
    driver.find_element(By.CSS_SELECTOR, "button.object-key[data-key='doc-010']").click()
    wait(driver, lambda d: "doc-010" in text(d, "#object-history h2"), 20)
    history = driver.execute_script(
        "return [...document.querySelectorAll('#object-history-table tbody tr')]"
        ".map(r => [r.cells[0].textContent, r.cells[3].textContent, r.cells[4].textContent])")
    assert history == [["1", "10", "v1-10"], ["2", "100", "v2"], ["3", "200", "v3"]], history
    assert "Exists now" in text(driver, "#object-history")
    shot(driver, "object-history")

    driver.find_element(By.CSS_SELECTOR, "button.object-key[data-key='doc-000']").click()
    wait(driver, lambda d: "doc-000" in text(d, "#object-history h2"), 20)
    assert "Removed now" in text(driver, "#object-history")
    types = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#object-history-table tbody td:nth-child(2)")]
    assert types == ["ObjectCreated:Put", "ObjectRemoved:Delete"], types
    no_errors(driver)


if __name__ == "__main__":
    run({"live_view": live_view, "restore": restore, "objects": objects})
