"""What every console browser test shares: Debian's chromium driven by Selenium through
Debian's chromedriver (no driver download), the server from the Rust harness, sign-in through
the login page, screenshots saved as artifacts, and bounded waits.

The Rust harness (tests/console.rs) starts `tidemark serve` and passes, in the environment:
TIDEMARK_URL (http://127.0.0.1:PORT), TIDEMARK_ADMIN_TOKEN (the bootstrap admin token) and
CONSOLE_SCREENSHOTS (a directory under the build's target dir, not in the repository).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ.get("TIDEMARK_URL", "http://127.0.0.1:7700")
ADMIN = os.environ.get("TIDEMARK_ADMIN_TOKEN", "")
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "console-screenshots")


def browser():
    """A headless Chromium (Debian's), 1400x1000."""
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def shot(driver, name):
    """Save a screenshot as `<CONSOLE_SCREENSHOTS>/<name>.png`, after checking the page's
    accessible basics (every page a test looks at is checked)."""
    os.makedirs(SHOTS, exist_ok=True)
    path = os.path.join(SHOTS, f"{name}.png")
    driver.save_screenshot(path)
    problems = accessibility_problems(driver)
    assert not problems, f"page '{name}': " + "; ".join(problems[:10])
    return path


# Run in the page: every visible form control has a label, every button and link a name,
# every visible text at least 4.5:1 against its background (3:1 when large, WCAG 2.1 AA;
# disabled controls are exempt), and the page can be entered with the keyboard.
A11Y_SCRIPT = r"""
const problems = [];
const visible = (el) => el.offsetParent !== null || getComputedStyle(el).position === "fixed";
const name = (el) => (el.getAttribute("aria-label") || el.textContent || el.title || "").trim();
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type === "hidden" || !visible(el)) continue;
  if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
    problems.push(`no label: <${el.tagName.toLowerCase()} id=${el.id} name=${el.name}>`);
}
for (const el of document.querySelectorAll("button, a[href]")) {
  if (visible(el) && !name(el)) problems.push(`no accessible name: ${el.outerHTML.slice(0, 80)}`);
}
const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const seen = new Set();
for (const el of document.querySelectorAll("body *")) {
  if (!visible(el) || el.closest("[disabled], :disabled, svg")) continue;
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const style = getComputedStyle(el);
  if (style.visibility === "hidden" || Number(style.opacity) === 0) continue;
  const [a, b] = [lum(rgb(style.color)), lum(background(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
  const key = `${style.color}/${background(el)}`;
  if (ratio < (large ? 3 : 4.5) && !seen.has(key)) {
    seen.add(key);
    problems.push(`contrast ${ratio.toFixed(2)}:1 for "${el.textContent.trim().slice(0, 30)}" (${style.color} on rgb(${background(el)}))`);
  }
}
if (!document.querySelector(".skip[href='#main']")) problems.push("no skip link to the content");
return problems;
"""


def accessibility_problems(driver):
    """What the page lacks of the accessible basics (empty when nothing)."""
    return driver.execute_script(A11Y_SCRIPT)


def wait(driver, condition, timeout=20, message=""):
    """Until `condition(driver)` is truthy (its value), at most `timeout` seconds. An element
    the page re-rendered between finding and reading it is looked for again on the next poll."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException,
                                             StaleElementReferenceException)).until(condition, message)


def visible(driver, css, timeout=20):
    return wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout,
                f"no visible {css}")


def clickable(driver, css, timeout=20):
    return wait(driver, EC.element_to_be_clickable((By.CSS_SELECTOR, css)), timeout,
                f"no clickable {css}")


def login(driver, token, page="watch"):
    """Open the console and sign in with `token` through the login form."""
    driver.get(f"{URL}/ui/#/{page}")
    field = visible(driver, "#login-token")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    visible(driver, "#nav")
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "#login-form"), 20,
         "still on the login form")


def api(method, path, body=None, token=None, content_type="application/json"):
    """Call the HTTP API directly (as the test, not the page): (status, parsed JSON or text)."""
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {token or ADMIN}")
    if data is not None:
        req.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def make_token(scopes, buckets=None):
    """A new API token with `scopes`: its secret."""
    body = {"description": "console " + ", ".join(scopes), "scopes": scopes}
    if buckets:
        body["buckets"] = buckets
    status, answer = api("POST", "/v1/tokens", body)
    assert status in (200, 201), (status, answer)
    return answer["secret"]


def console_errors(driver):
    """Severe messages the page logged (uncaught errors, failed loads)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def run(scenarios):
    """`python3 console_x.py NAME`: run scenario NAME with a fresh browser, screenshot on
    failure, exit non-zero with the reason."""
    name = sys.argv[1] if len(sys.argv) > 1 else None
    if name not in scenarios:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(scenarios)}}}")
    driver = browser()
    started = time.time()
    try:
        scenarios[name](driver)
    except BaseException:
        try:
            shot(driver, f"FAILED-{name}")
            print("browser log:", json.dumps(driver.get_log("browser"), indent=1), file=sys.stderr)
        except Exception:  # noqa: BLE001 - the original failure matters more
            pass
        raise
    finally:
        driver.quit()
    print(f"{name}: ok in {time.time() - started:.1f}s")
