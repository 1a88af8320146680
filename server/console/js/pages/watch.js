// Live changes: the SSE watch (`GET /v1/watch`) of a bucket and prefix, rendered once per
// animation frame, with a bounded number of rows in the page and an event's detail
// (full JSON, before/after diff, log position) on click or Enter.
//
// Pause closes the stream and keeps the cursor of the last event received; Resume reopens it
// with `since=<cursor>`, so nothing is missed or shown twice (docs/watch.md). A stream the
// server ends (cut-off, restart) is reopened by EventSource itself with `Last-Event-ID`.

import * as api from "../api.js";
import { h, field, fill, json, time } from "../ui.js";

/** Rows kept in the page: enough to read, few enough to stay fast at 1,000 events/s. */
export const MAX_ROWS = 500;

/** Rows are added at most this often: at 1,000 events/s a frame per event batch would spend
 * the page's time on layout and paint that no one can read that fast. */
const FLUSH_MS = 150;

/** Object fields compared in the detail's before/after table. */
const STATE_FIELDS = ["size", "etag", "content_type", "sha256", "storage_class", "version_id", "sequence", "metadata", "tags"];

export function mount(root, { params }) {
  const view = new LiveView(params);
  root.append(...view.render());
  if (params.get("bucket") !== null && params.get("start") === "1") view.start();
  return () => view.stop();
}

class LiveView {
  constructor(params) {
    this.source = null; // the open EventSource, if streaming
    this.cursor = null; // the id of the last event received: where Resume starts
    this.received = 0; // every event received since Start, kept or not
    this.queue = []; // parsed events waiting for the next frame
    this.frame = 0; // the pending requestAnimationFrame, 0 if none
    this.flushed = 0; // when rows were last added (performance.now())
    this.events = new WeakMap(); // row → its event, for the detail
    this.selected = null;
    this.bucket = h("input", { name: "bucket", id: "watch-bucket", value: params.get("bucket") || "", placeholder: "every bucket" });
    this.prefix = h("input", { name: "prefix", id: "watch-prefix", value: params.get("prefix") || "" });
    this.since = h(
      "select",
      { name: "since", id: "watch-since" },
      h("option", { value: "now" }, "new changes"),
      h("option", { value: "earliest" }, "everything in the log"),
    );
  }

  render() {
    this.startButton = h("button", { type: "submit", id: "watch-start" }, "Start");
    this.pauseButton = h("button", { type: "button", id: "watch-pause", class: "secondary", disabled: true, onclick: () => this.pause() }, "Pause");
    this.resumeButton = h("button", { type: "button", id: "watch-resume", class: "secondary", disabled: true, onclick: () => this.resume() }, "Resume");
    this.status = h("span", { id: "watch-status", role: "status" }, "stopped");
    this.count = h("strong", { id: "watch-count" }, "0");
    this.rows = h("tbody", { id: "watch-rows", onclick: (e) => this.pick(e), onkeydown: (e) => this.key(e) });
    this.detail = h("section", { id: "watch-detail", class: "panel", "aria-live": "polite", hidden: true });
    const form = h(
      "form",
      { class: "row", id: "watch-form", onsubmit: (e) => (e.preventDefault(), this.start()) },
      field("Bucket", this.bucket),
      field("Key prefix", this.prefix),
      field("From", this.since),
      this.startButton,
      this.pauseButton,
      this.resumeButton,
    );
    const head = ["Time", "Type", "Key", "Size", "ETag", "Seq", "Part./offset"];
    return [
      h("h1", {}, "Live changes"),
      form,
      h("p", {}, "Status: ", this.status, " · received ", this.count, " events · ",
        h("span", { class: "muted" }, `the newest ${MAX_ROWS} are shown (older rows are dropped from the page). Click a row or press Enter on it for its detail.`)),
      h(
        "div",
        { class: "split" },
        // A scroll box of its own: adding rows lays out and paints only inside it.
        h("div", { class: "watch-scroll" },
          h("table", { id: "watch-table" },
            h("caption", {}, "Events, newest first"),
            h("thead", {}, h("tr", {}, head.map((x) => h("th", { scope: "col" }, x)))),
            this.rows)),
        this.detail,
      ),
    ];
  }

  /** A new stream from the form's bucket, prefix and start point. */
  start() {
    this.close();
    this.received = 0;
    this.queue = [];
    this.cursor = null;
    this.rows.replaceChildren();
    this.detail.hidden = true;
    this.count.textContent = "0";
    const params = { bucket: this.bucket.value.trim(), prefix: this.prefix.value, since: this.since.value };
    // Keep the choice in the address without a hashchange (which would remount the page).
    history.replaceState(null, "", "#/watch" + api.query({ bucket: params.bucket, prefix: params.prefix }));
    this.open(params);
  }

  pause() {
    this.close();
    this.setState("paused", { pause: false, resume: true });
  }

  resume() {
    this.open({ bucket: this.bucket.value.trim(), prefix: this.prefix.value, since: this.cursor || "now" });
  }

  /** Everything the page holds open: the stream and the pending frame. */
  stop() {
    this.close();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
  }

  open(params) {
    const source = new EventSource("/v1/watch" + api.query(params), { withCredentials: true });
    this.source = source;
    this.setState("connecting…", { pause: true, resume: false });
    source.onopen = () => this.source === source && this.setState("live", { pause: true, resume: false });
    // Each change arrives as an SSE event named by its type, and EventSource hands named
    // events only to listeners of that name: one listener per type of the closed set.
    for (const type of EVENT_TYPES) source.addEventListener(type, (m) => this.receive(m));
    source.addEventListener("error", (m) => this.failed(source, m));
  }

  /** A server `error` event (a cut-off, with `resume`) or a lost connection. */
  failed(source, message) {
    if (this.source !== source) return;
    if (message.data) {
      // The stream ends after a cut-off; EventSource reconnects from the last id it saw.
      let reason = message.data;
      try {
        reason = JSON.parse(message.data).reason || reason;
      } catch (_) {
        /* keep the text */
      }
      this.setState(`cut off, reconnecting (${reason})`, { pause: true, resume: false });
    } else if (source.readyState === EventSource.CLOSED) {
      this.source = null;
      this.setState("closed by the server (check the bucket and prefix, and your token's scopes)", { pause: false, resume: !!this.cursor });
    } else {
      this.setState("reconnecting…", { pause: true, resume: false });
    }
  }

  setState(text, { pause, resume }) {
    this.status.textContent = text;
    this.pauseButton.disabled = !pause;
    this.resumeButton.disabled = !resume;
  }

  receive(message) {
    this.cursor = message.lastEventId || this.cursor;
    this.received += 1;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      event = { event_type: message.type, unparsed: message.data };
    }
    event.cursor = message.lastEventId;
    this.queue.push(event);
    // Only what can still be shown is kept until the frame.
    if (this.queue.length > MAX_ROWS) this.queue.splice(0, this.queue.length - MAX_ROWS);
    if (!this.frame) this.frame = requestAnimationFrame((t) => this.flush(t));
  }

  /** In a frame at least FLUSH_MS after the last: the queued events as rows on top, the
   * oldest rows beyond the cap gone. */
  flush(now) {
    if (now - this.flushed < FLUSH_MS) {
      this.frame = requestAnimationFrame((t) => this.flush(t));
      return;
    }
    this.frame = 0;
    this.flushed = now;
    const batch = this.queue;
    this.queue = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) fragment.append(this.row(batch[i]));
    this.rows.prepend(fragment);
    let extra = this.rows.childElementCount - MAX_ROWS;
    while (extra-- > 0) this.rows.lastElementChild.remove();
    this.count.textContent = String(this.received);
  }

  row(event) {
    const tr = document.createElement("tr");
    tr.className = "selectable";
    tr.tabIndex = 0;
    tr.dataset.key = event.key || "";
    tr.dataset.sequence = event.sequence ?? "";
    tr.dataset.eventId = event.event_id || "";
    tr.title = time(event.event_time);
    const cells = [
      time(event.event_time).slice(11), // the time of day: the date is in the row's title and detail
      event.event_type,
      event.key,
      event.size ?? "",
      event.etag ?? "",
      event.sequence ?? "",
      `${event.partition ?? "?"}/${event.offset ?? "?"}`,
    ];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.append(td);
    }
    this.events.set(tr, event);
    return tr;
  }

  pick(e) {
    const tr = e.target.closest("tr");
    if (tr && this.events.has(tr)) this.show(tr);
  }

  /** Enter/Space opens the focused row; arrows move between rows. */
  key(e) {
    const tr = e.target.closest("tr");
    if (!tr) return;
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      this.show(tr);
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const next = e.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
      if (next) next.focus();
    }
  }

  show(tr) {
    if (this.selected) this.selected.removeAttribute("aria-selected");
    this.selected = tr;
    tr.setAttribute("aria-selected", "true");
    const event = this.events.get(tr);
    this.detail.hidden = false;
    fill(
      this.detail,
      h("h2", {}, `${event.event_type} ${event.bucket}/${event.key}`),
      h("p", { id: "watch-position" },
        `Log position: partition ${event.partition}, offset ${event.offset} · sequence ${event.sequence} · cursor `,
        h("code", {}, event.cursor || "")),
      diffTable(before(event), after(event)),
      h("h2", {}, "Event"),
      json(withoutCursor(event)),
    );
  }
}

/** The event types the watch can send (PRODUCT.md's closed set): each is its own SSE name. */
const EVENT_TYPES = [
  "ObjectCreated:Put", "ObjectCreated:Copy", "ObjectCreated:CompleteMultipartUpload",
  "ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated",
  "ObjectTagging:Put", "ObjectTagging:Delete", "ObjectMetadata:Update",
  "LifecycleTransition", "LifecycleExpiration:Delete",
  "ObjectAccessed:Get", "ObjectAccessed:Head", "ObjectAccess:Denied",
  "BucketCreated", "BucketRemoved", "BucketConfig:Changed",
  "System:Health", "System:Capacity", "message",
];

function withoutCursor(event) {
  const { cursor: _cursor, ...rest } = event;
  return rest;
}

/** The object before the change (the event's `previous`), or null if there was none. */
function before(event) {
  return event.previous || null;
}

/** The object after the change: the event's own fields, or null once it is removed. */
function after(event) {
  const type = event.event_type || "";
  if (type.startsWith("ObjectRemoved:") || type.startsWith("LifecycleExpiration")) return null;
  const state = {};
  for (const f of STATE_FIELDS) state[f] = event[f];
  return state;
}

function show(value) {
  if (value === undefined || value === null) return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** Field | before | after, the fields that changed marked (class and text, not colour only). */
function diffTable(old, now) {
  const rows = STATE_FIELDS.map((f) => {
    const a = old ? show(old[f]) : "—";
    const b = now ? show(now[f]) : "—";
    const changed = a !== b;
    return h(
      "tr",
      { class: changed ? "changed" : null, "data-field": f },
      h("th", { scope: "row" }, f, changed ? h("span", { class: "sr-note" }, " (changed)") : null),
      h("td", { class: changed ? "diff-old before" : "before" }, a),
      h("td", { class: changed ? "diff-new after" : "after" }, b),
    );
  });
  return h(
    "table",
    { id: "watch-diff", class: "diff" },
    h("caption", {}, `Before → after${old ? "" : " (the object did not exist before)"}${now ? "" : " (removed)"}`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
    h("tbody", {}, rows),
  );
}
