// The subscriptions page: every subscription with its state, circuit, lag per partition over
// the last minutes, delivery rate and last error (`#/subscriptions`); one subscription with
// its dead letters, paged, inspected and redriven (`#/subscriptions/<name>`).
//
// Lag and rates come from polling `/v1/subscriptions/{name}/status`: the history is kept in
// this module (not the DOM), so it survives going to a subscription and back.

import * as api from "../api.js";
import { h, table, flash, guarded, json, time, fill } from "../ui.js";

/** Poll period, and how many samples a sparkline shows (5 minutes at 2 s). */
const POLL_MS = 2000;
const HISTORY = 150;
/** Dead letters per page. */
const PAGE = 25;

/** name → [{t, lags: [per partition], delivered}], oldest first. */
const history = new Map();

export function mount(root, { rest, params }) {
  return rest.length ? mountOne(root, rest[0], params) : mountList(root);
}

// ---- status polling, shared by both views ---------------------------------------------

function record(status) {
  const samples = history.get(status.name) || [];
  samples.push({
    t: Date.now(),
    lags: status.partitions.map((p) => p.lag),
    delivered: status.delivered,
  });
  if (samples.length > HISTORY) samples.splice(0, samples.length - HISTORY);
  history.set(status.name, samples);
  return samples;
}

/** Events delivered per second over the last ~10 s of samples (null until two samples). */
function rate(samples) {
  if (samples.length < 2) return null;
  const last = samples[samples.length - 1];
  const first = samples[Math.max(0, samples.length - 6)];
  const seconds = (last.t - first.t) / 1000;
  return seconds > 0 ? Math.max(0, last.delivered - first.delivered) / seconds : null;
}

/** Run `tick` now and every POLL_MS (never two at once); returns the stop function. */
function poll(tick) {
  let timer = null;
  let stopped = false;
  const loop = async () => {
    await tick().catch((e) => flash(e));
    if (!stopped) timer = setTimeout(loop, POLL_MS);
  };
  loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---- small renderings ---------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

/** A 72×18 sparkline of `values` (scaled to their own maximum). */
function sparkline(values, label) {
  const w = 72;
  const hgt = 18;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(hgt - 1 - (v / max) * (hgt - 2)).toFixed(1)}`);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", hgt);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const title = document.createElementNS(SVG, "title");
  title.textContent = label;
  svg.append(title);
  // One sample is no line yet.
  if (values.length > 1) {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  return svg;
}

/** One sparkline per partition with its current lag. */
function lagCharts(samples) {
  const partitions = samples.length ? samples[samples.length - 1].lags.length : 0;
  const charts = [];
  for (let p = 0; p < partitions; p++) {
    const values = samples.map((s) => s.lags[p] || 0);
    const now = values[values.length - 1];
    charts.push(h("span", { class: "lag-part" }, h("span", { class: "mono" }, `p${p} ${now}`), " ",
      sparkline(values, `partition ${p}: lag ${now} now, ${Math.max(...values)} at most in the last ${samples.length} samples`)));
  }
  return h("div", { class: "lags" }, charts);
}

function circuitCell(status) {
  if (!status.circuit) return h("span", { class: "muted" }, "n/a");
  const cls = status.circuit === "closed" ? "ok" : status.circuit === "open" ? "bad" : "warn";
  return h("span", { class: cls }, status.circuit);
}

function stateCell(status) {
  const cls = status.state === "running" ? "ok" : status.state === "disabled" ? "bad" : "warn";
  const why = status.disabled_reason || status.paused_reason;
  return h("span", { class: cls, title: why || null }, status.state, why ? ` (${why})` : null);
}

/** `{at, message, status, attempt}` of the sink's last failure. */
function lastError(e) {
  if (!e) return "";
  return h("span", { class: "bad", title: time(e.at) }, `${e.message} (attempt ${e.attempt}, ${time(e.at)})`);
}

function rateText(samples) {
  const r = rate(samples);
  return r === null ? "…" : `${r.toFixed(r < 10 ? 1 : 0)}/s`;
}

function sinkText(sub) {
  const s = sub.sink || {};
  return [s.type, s.url || s.path || s.function || s.topic || ""].filter(Boolean).join(" ");
}

// ---- the list ---------------------------------------------------------------------------

/** Subscriptions per page of the list (each polled with its status in one request). */
const LIST_PAGE = 25;

function mountList(root) {
  const body = h("tbody", {});
  const empty = h("p", { class: "muted", hidden: true }, "No subscriptions yet (POST /v1/subscriptions or `tidemark sub create`).");
  // `after` of each page shown so far: the last is the current page's.
  const pages = [null];
  let next = null;
  const prev = h("button", { type: "button", class: "secondary", id: "subs-prev", disabled: true }, "Previous");
  const more = h("button", { type: "button", class: "secondary", id: "subs-next", disabled: true }, "Next");
  const rows = new Map();
  const tick = async () => {
    const after = pages[pages.length - 1];
    const page = await api.get("/v1/subscriptions" + api.query({ limit: LIST_PAGE, after, status: "true" }));
    next = page.next_after;
    prev.disabled = pages.length === 1;
    more.disabled = !next;
    empty.hidden = page.subscriptions.length > 0 || pages.length > 1;
    const seen = new Set();
    for (const sub of page.subscriptions) {
      const status = sub.status;
      if (!status || status.error) continue; // deleted since it was listed
      seen.add(sub.name);
      if (!rows.has(sub.name)) rows.set(sub.name, listRow(sub.name));
      updateRow(rows.get(sub.name), sub, status, record(status));
      body.append(rows.get(sub.name)); // keeps the server's order; moves, never re-creates
    }
    for (const [name, row] of rows) if (!seen.has(name)) row.remove(), rows.delete(name);
  };
  const turn = (f) => () => {
    f();
    tick().catch((e) => flash(e));
  };
  prev.addEventListener("click", turn(() => pages.length > 1 && pages.pop()));
  more.addEventListener("click", turn(() => next && pages.push(next)));
  fill(root,
    h("h1", {}, "Subscriptions"),
    h("p", { class: "muted" }, `Updated every ${POLL_MS / 1000} s, ${LIST_PAGE} to a page; lag charts cover the last minutes this page was open.`),
    empty,
    h("table", { id: "subscriptions" },
      h("thead", {}, h("tr", {}, ["Name", "Sink", "State", "Circuit", "Lag per partition", "Delivery rate", "Dead letters", "Last error"]
        .map((x) => h("th", { scope: "col" }, x)))),
      body),
    h("div", { class: "pager" }, prev, more));
  return poll(tick);
}

/** A row that opens the subscription on click or Enter, reachable with Tab. */
function listRow(name) {
  const open = () => (window.location.hash = `#/subscriptions/${encodeURIComponent(name)}`);
  const row = h("tr", {
    class: "selectable", tabindex: 0, "data-name": name,
    onclick: open, onkeydown: (e) => e.key === "Enter" && open(),
  });
  for (let i = 0; i < 8; i++) row.append(h("td", {}));
  return row;
}

function updateRow(row, sub, status, samples) {
  const c = row.cells;
  fill(c[0], h("a", { href: `#/subscriptions/${encodeURIComponent(sub.name)}` }, sub.name));
  fill(c[1], h("span", { class: "mono" }, sinkText(sub)));
  fill(c[2], stateCell(status));
  fill(c[3], circuitCell(status));
  fill(c[4], h("div", {}, h("strong", {}, String(status.lag))), lagCharts(samples));
  fill(c[5], rateText(samples), h("div", { class: "muted" }, `${status.delivered} delivered`));
  fill(c[6], h("span", { class: status.dead_letters ? "bad dead-count" : "dead-count" }, String(status.dead_letters)));
  fill(c[7], lastError(status.last_error));
}

// ---- one subscription --------------------------------------------------------------------

function mountOne(root, name) {
  const base = `/v1/subscriptions/${encodeURIComponent(name)}`;
  const summary = h("div", { class: "panel", id: "sub-status", "aria-live": "polite" });
  const definition = h("details", {}, h("summary", {}, "Definition"));
  const letters = deadLetters(base);
  fill(root,
    h("p", {}, h("a", { href: "#/subscriptions" }, "← All subscriptions")),
    h("h1", {}, "Subscription ", h("span", { class: "mono" }, name)),
    summary, definition, letters.el);
  guarded(async () => definition.append(json(await api.get(base))));
  let lastCount = null;
  return poll(async () => {
    const status = await api.get(`${base}/status`);
    showStatus(summary, status, record(status));
    // New or redriven letters: show the queue as it is now.
    if (status.dead_letters !== lastCount) {
      lastCount = status.dead_letters;
      await letters.reload();
    }
  });
}

function showStatus(el, status, samples) {
  const item = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
  fill(el, h("dl", { class: "facts" },
    item("State", stateCell(status)),
    item("Circuit", h("span", {}, circuitCell(status), status.circuit_opened ? ` (opened ${status.circuit_opened}×)` : "")),
    item("Endpoint", status.endpoint || "—"),
    item("Lag", String(status.lag)),
    item("Delivery rate", rateText(samples)),
    item("Delivered", String(status.delivered)),
    item("Failed attempts", String(status.failed_attempts)),
    item("Dead letters", h("span", { id: "dead-letter-count" }, String(status.dead_letters))),
    item("Last error", lastError(status.last_error) || "—")),
  h("h2", {}, "Lag per partition"), lagCharts(samples));
}

/** The dead-letter queue: a page at a time (`after` cursors), one letter inspected. */
function deadLetters(base) {
  const mayRedrive = api.can("subscriptions");
  const state = { cursors: [null], letters: [], next: null, count: 0, selected: null };
  const list = h("div", { id: "dead-letters" });
  const detail = h("div", { id: "dead-letter-detail", "aria-live": "polite" });
  const result = h("p", { id: "redrive-result", role: "status" });
  const all = mayRedrive
    ? h("button", { type: "button", id: "redrive-all", class: "danger", "data-scope": "subscriptions", onclick: () => redrive(null) }, "Redrive all")
    : null;
  const el = h("section", { "aria-labelledby": "dl-title" },
    h("div", { class: "row" }, h("h2", { id: "dl-title" }, "Dead letters"), all),
    result, h("div", { class: "split" }, list, detail));

  async function load() {
    const after = state.cursors[state.cursors.length - 1];
    const page = await api.get(`${base}/dead-letters${api.query({ after, limit: PAGE })}`);
    Object.assign(state, { letters: page.dead_letters, next: page.next_after, count: page.count });
    if (!page.dead_letters.length && state.cursors.length > 1) {
      state.cursors.pop(); // the page emptied under us (redriven): step back
      return load();
    }
    render();
  }

  function render() {
    if (all) all.disabled = state.count === 0;
    if (!state.count) {
      fill(list, h("p", { class: "muted" }, "No dead letters."));
      fill(detail);
      return;
    }
    const first = (state.cursors.length - 1) * PAGE + 1;
    const rows = state.letters.map((l) => letterRow(l));
    fill(list,
      table(`${first}–${first + state.letters.length - 1} of ${state.count}`,
        ["Dead at", "Event", "Object", "Attempts", "Status"], rows, { id: "dead-letter-table" }),
      h("div", { class: "pager" },
        h("button", { type: "button", class: "secondary", id: "dl-prev", disabled: state.cursors.length < 2,
          onclick: () => { state.cursors.pop(); guarded(load); } }, "← Previous"),
        h("button", { type: "button", class: "secondary", id: "dl-next", disabled: !state.next,
          onclick: () => { state.cursors.push(state.next); guarded(load); } }, "Next →")));
    const still = state.letters.find((l) => l.id === state.selected);
    if (still) inspect(still);
    else fill(detail, h("p", { class: "muted" }, "Select a dead letter to see its last attempt."));
  }

  function letterRow(l) {
    const pick = () => inspect(l);
    return h("tr", {
      class: "selectable dead-letter", tabindex: 0, "data-id": l.id,
      "aria-selected": String(l.id === state.selected),
      onclick: pick, onkeydown: (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), pick()),
    },
    h("td", {}, time(l.dead_at)),
    h("td", {}, l.event_type || ""),
    h("td", { class: "mono" }, `${l.bucket || ""}/${l.key || ""}`),
    h("td", {}, String(l.attempts)),
    h("td", {}, l.status === null || l.status === undefined ? "—" : String(l.status)));
  }

  function inspect(l) {
    state.selected = l.id;
    for (const tr of list.querySelectorAll("tr.dead-letter")) tr.setAttribute("aria-selected", String(tr.dataset.id === l.id));
    const { excerpt, message } = splitError(l.error);
    const item = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
    fill(detail, h("div", { class: "panel", id: "attempt" },
      h("h3", {}, "Last attempt"),
      h("dl", { class: "facts" },
        item("HTTP status", h("span", { id: "attempt-status" }, l.status ?? "none (no answer)")),
        item("Attempts", h("span", { id: "attempt-count" }, String(l.attempts))),
        item("Error", h("span", { id: "attempt-error" }, message)),
        item("Event", h("span", { class: "mono" }, l.event_id || "")),
        item("Log position", `partition ${l.partition}, offset ${l.offset}`),
        item("Dead since", time(l.dead_at))),
      h("h4", {}, "Response excerpt"),
      h("pre", { class: "json", id: "attempt-response" }, excerpt || "(empty)"),
      mayRedrive
        ? h("button", { type: "button", class: "redrive-one", "data-scope": "subscriptions", onclick: () => redrive([l.id]) }, "Redrive this letter")
        : null));
  }

  async function redrive(ids) {
    const what = ids ? "this dead letter" : `all ${state.count} dead letters`;
    if (!ids && !window.confirm(`Redrive ${what}? They are delivered again to the sink.`)) return;
    await guarded(async () => {
      const answer = await api.post(`${base}/dead-letters/redrive`, ids ? { ids } : {});
      result.className = "ok";
      result.textContent = `Redriving ${answer.redriving} dead letter${answer.redriving === 1 ? "" : "s"}; ` +
        "those that fail again come back with their attempts counted.";
      if (ids) state.selected = null;
      await load();
    });
  }

  return { el, reload: () => guarded(load) };
}

/** The webhook sink's error is "endpoint answered 500 Internal Server Error: <body excerpt>". */
function splitError(error) {
  const m = /^(endpoint answered [^:]*?)(?::\s([\s\S]*))?$/.exec(error || "");
  return m ? { message: m[1], excerpt: m[2] || "" } : { message: error || "", excerpt: "" };
}
