// The filters page: every filter with its versions (`#/filters`), upload of a .wasm or .wat
// module, and one filter (`#/filters/<name>`): its versions, a test on the last N events of
// the log or on pasted sample events (verdict, fuel and time per event, match rate),
// attaching a version to a subscription, and rolling back (re-pointing a subscription to an
// older version, or deleting the newest version).

import * as api from "../api.js";
import { h, field, table, flash, guarded, time, fill } from "../ui.js";

export function mount(root, { rest, go }) {
  if (rest.length) mountOne(root, rest[0]);
  else mountList(root, go);
  return () => {};
}

const filterPath = (ref) => `/v1/filters/${encodeURIComponent(ref)}`;

// ---- the list and the upload form ------------------------------------------------------

function mountList(root, go) {
  const list = h("div", { id: "filter-list" }, h("p", { class: "muted" }, "Loading…"));
  fill(root, h("h1", {}, "Filters"), api.can("filters") ? uploadForm(go) : null, list);
  guarded(async () => {
    const { filters } = await api.get("/v1/filters");
    if (!filters.length) return fill(list, h("p", { class: "muted" }, "No filters uploaded yet."));
    const open = (name) => go("filters", [name]);
    const rows = filters.map((f) => h("tr", {
      class: "selectable", tabindex: 0, "data-name": f.name,
      onclick: () => open(f.name), onkeydown: (e) => e.key === "Enter" && open(f.name),
    },
    h("td", {}, h("a", { href: `#/filters/${encodeURIComponent(f.name)}` }, f.name)),
    h("td", {}, f.versions.join(", ")),
    h("td", {}, f.latest ?? "—"),
    h("td", {}, f.size === null ? "" : `${f.size} B`),
    h("td", {}, time(f.uploaded_at)),
    h("td", {}, (f.used_by || []).join(", ") || "—")));
    fill(list, table("", ["Name", "Versions", "Latest", "Size", "Uploaded", "Used by"], rows, { id: "filters" }));
  });
}

function uploadForm(go) {
  const name = h("input", { id: "upload-name", name: "name", required: true, pattern: "[A-Za-z0-9._\\-]+", autocomplete: "off" });
  const file = h("input", { id: "upload-file", type: "file", accept: ".wasm,.wat", required: true });
  const fuel = h("input", { id: "upload-fuel", type: "number", min: 1, inputmode: "numeric" });
  const timeout = h("input", { id: "upload-timeout", type: "number", min: 1, inputmode: "numeric" });
  // The filter is named after the file unless the author says otherwise.
  file.addEventListener("change", () => {
    if (!name.value && file.files[0]) name.value = file.files[0].name.replace(/\.(wasm|wat)$/, "");
  });
  const form = h("form", { class: "panel", id: "upload-form", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload a version"),
    h("div", { class: "row" },
      field("Filter name", name),
      field("Module (.wasm or .wat)", file),
      field("Fuel per event", fuel, "server default when empty"),
      field("Deadline per event (ms)", timeout, "server default when empty"),
      h("button", { type: "submit", id: "upload-filter", "data-scope": "filters" }, "Upload")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(async () => {
      if (!file.files[0]) throw new Error("choose a .wasm or .wat file");
      // The file as it is: the server takes a .wasm module or assembles .wat text.
      const q = api.query({ fuel: fuel.value, timeout_ms: timeout.value });
      const type = file.files[0].name.endsWith(".wat") ? "text/plain" : "application/wasm";
      const v = await api.post(filterPath(name.value.trim()) + q, file.files[0], type);
      flash(v.created ? `Uploaded ${v.reference}.` : `${v.reference} already holds this module; nothing changed.`, "notice");
      go("filters", [v.name]);
    });
  });
  return form;
}

// ---- one filter -------------------------------------------------------------------------

function mountOne(root, name) {
  const versions = h("div", { id: "versions" }, h("p", { class: "muted" }, "Loading…"));
  const panels = h("div", {});
  fill(root,
    h("p", {}, h("a", { href: "#/filters" }, "← All filters")),
    h("h1", {}, "Filter ", h("span", { class: "mono" }, name)),
    versions, panels);
  const reload = () => guarded(async () => {
    const f = await api.get(filterPath(name));
    const live = f.versions.filter((v) => v.state === "live");
    fill(versions, versionTable(f, live, reload));
    fill(panels,
      api.can("filters") ? testPanel(name, live) : null,
      api.can("subscriptions") ? attachPanel(name, live, reload) : null);
  });
  reload();
}

function versionTable(f, live, reload) {
  const newest = live.length ? live[live.length - 1].version : null;
  const rows = f.versions.map((v) => [
    h("span", { class: "mono" }, v.reference),
    h("span", { class: v.state === "live" ? "ok" : "muted" }, v.state),
    `ABI ${v.abi_version}`,
    `${v.size} B`,
    h("span", { class: "mono", title: v.sha256 }, v.sha256.slice(0, 12)),
    `fuel ${v.limits.fuel}, ${v.limits.timeout_ms} ms`,
    `${time(v.uploaded_at)} by ${v.uploaded_by || "?"}`,
    (v.used_by || []).join(", ") || "—",
    api.can("filters") && v.version === newest && live.length > 1
      ? h("button", { type: "button", class: "danger delete-version", "data-scope": "filters",
        onclick: () => deleteVersion(v, live, reload) }, "Roll back (delete this version)")
      : "",
  ]);
  return table("Versions", ["Version", "State", "ABI", "Size", "SHA-256", "Limits", "Uploaded", "Used by", ""], rows, { id: "version-table" });
}

/** Rolling back by deleting the newest version: unpinned subscriptions then use the one before. */
async function deleteVersion(v, live, reload) {
  const previous = live[live.length - 2];
  if (!window.confirm(`Delete ${v.reference}? Subscriptions naming "${v.name}" without a version will use ${previous.reference}.`)) return;
  await guarded(async () => {
    await api.del(filterPath(v.reference));
    flash(`Deleted ${v.reference}; "${v.name}" now means ${previous.reference}.`, "notice");
    reload();
  });
}

// ---- testing ----------------------------------------------------------------------------

function testPanel(name, live) {
  const version = versionSelect("test-version", live, false);
  const source = h("select", { id: "test-source" },
    h("option", { value: "log" }, "The last N events of the log"),
    h("option", { value: "sample" }, "Pasted sample events"));
  const count = h("input", { id: "test-last", type: "number", min: 1, max: 10000, value: "50" });
  const sample = h("textarea", { id: "test-sample", placeholder: '[{"event_type": "ObjectCreated:Put", "bucket": "photos", "key": "raw/a.jpg", "size": 20000000}]' });
  const params = h("input", { id: "test-params", placeholder: '{"min_size": 1024}', class: "mono" });
  const sampleField = field("Sample events (a JSON array, or one event per line; the `log tail --json` form)", sample);
  const countField = field("N", count);
  const toggle = () => {
    sampleField.hidden = source.value !== "sample";
    countField.hidden = source.value !== "log";
  };
  source.addEventListener("change", toggle);
  toggle();
  const out = h("div", { id: "test-result", "aria-live": "polite" });
  const run = h("button", { type: "submit", id: "run-test", "data-scope": "filters" }, "Run test");
  const form = h("form", { class: "panel", id: "test-form", "aria-labelledby": "test-title" },
    h("h2", { id: "test-title" }, "Test"),
    h("div", { class: "row" }, field("Version", version), field("Events", source), countField,
      field("Parameters (JSON, for init)", params), run),
    sampleField, out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run.disabled = true;
    fill(out, h("p", { class: "muted" }, "Running…"));
    guarded(async () => {
      const body = await testBody(source.value, Number(count.value), sample.value, params.value);
      const answer = await api.post(filterPath(`${name}@${version.value}`) + "/test", body);
      showResult(out, answer);
    }).finally(() => {
      run.disabled = false;
      if (out.textContent === "Running…") fill(out);
    });
  });
  return form;
}

async function testBody(source, n, sampleText, paramsText) {
  const body = { max_results: 1000 };
  if (paramsText.trim()) body.params = parseJson(paramsText, "parameters");
  if (source === "sample") {
    const text = sampleText.trim();
    body.events = text.startsWith("[") ? parseJson(text, "sample events")
      : text.split("\n").filter((l) => l.trim()).map((l, i) => parseJson(l, `sample line ${i + 1}`));
    return body;
  }
  if (!(n >= 1)) throw new Error("N must be at least 1");
  body.last = n;
  return body;
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`not valid JSON in the ${what}: ${e.message}`);
  }
}

function showResult(out, a) {
  const pct = (a.match_rate * 100).toFixed(1);
  const stat = (s, unit) => (s ? `median ${s.median}${unit}, p99 ${s.p99}${unit}, max ${s.max}${unit}` : "—");
  const rows = a.results.map((r) => [
    String(r.index + 1),
    r.event_type,
    h("span", { class: "mono" }, `${r.bucket}/${r.key}`),
    h("span", { class: `verdict ${r.verdict === "keep" ? "ok" : r.verdict === "error" ? "bad" : "muted"}` }, r.verdict),
    String(r.fuel),
    `${r.time_us} µs`,
    r.error ? `${r.error_kind}: ${r.error}` : (r.logs || []).join("\n"),
  ]);
  fill(out,
    h("p", { class: "summary" },
      "Match rate ", h("strong", { id: "match-rate", "data-rate": String(a.match_rate) }, `${pct}%`),
      ` — ${a.kept} kept, ${a.dropped} dropped, ${a.errors} errors of ${a.evaluated} events (${a.filter}@${a.version})`),
    h("p", {}, `Fuel: ${stat(a.fuel, "")}. Time: ${stat(a.time_us, " µs")}.`),
    a.stopped ? h("p", { class: "warn" }, a.stopped.message) : null,
    a.results_truncated ? h("p", { class: "muted" }, `Showing the first ${a.results.length} events; the totals cover all.`) : null,
    table("Per event", ["#", "Type", "Object", "Verdict", "Fuel", "Time", "Error or logs"], rows, { id: "test-results" }));
}

// ---- attaching and rolling back --------------------------------------------------------

/** Versions to choose from; `floating` adds "latest" (the name alone, which follows uploads). */
function versionSelect(id, live, floating) {
  const newest = live.length ? live[live.length - 1].version : null;
  return h("select", { id },
    floating ? h("option", { value: "" }, "latest (follows new uploads)") : null,
    [...live].reverse().map((v) => h("option", { value: String(v.version), selected: !floating && v.version === newest },
      `version ${v.version}`)));
}

function attachPanel(name, live, reload) {
  const sub = h("select", { id: "attach-subscription", required: true });
  const version = versionSelect("attach-version", live, true);
  const current = h("p", { class: "muted", id: "attach-current" });
  const attach = h("button", { type: "submit", id: "attach-filter", "data-scope": "subscriptions" }, "Attach");
  const form = h("form", { class: "panel", id: "attach-form", "aria-labelledby": "attach-title" },
    h("h2", { id: "attach-title" }, "Attach to a subscription"),
    h("p", { class: "muted" }, "To roll back a subscription, attach it to an older version."),
    h("div", { class: "row" }, field("Subscription", sub), field("Version", version), attach), current);
  const subs = new Map();
  const describe = () => {
    const s = subs.get(sub.value);
    current.textContent = s ? `Now: ${s.filter ? s.filter : "no filter"}.` : "";
  };
  sub.addEventListener("change", describe);
  guarded(async () => {
    const { subscriptions } = await api.get("/v1/subscriptions");
    for (const s of subscriptions) subs.set(s.name, s);
    fill(sub, subscriptions.map((s) => h("option", { value: s.name }, s.name)));
    attach.disabled = !subscriptions.length;
    describe();
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(async () => {
      const reference = version.value ? `${name}@${version.value}` : name;
      const updated = await putFilter(sub.value, reference);
      flash(`Subscription ${updated.name} now uses ${reference}.`, "notice");
      reload();
    });
  });
  return form;
}

/** Replace the subscription's definition with the same one naming `reference`. */
async function putFilter(subName, reference) {
  const path = `/v1/subscriptions/${encodeURIComponent(subName)}`;
  const spec = await api.get(path);
  // What the server adds to a definition it shows; the rest is the spec as given.
  for (const k of ["created_at", "updated_at", "state", "disabled_reason"]) delete spec[k];
  spec.filter = reference;
  return api.put(path, spec);
}
