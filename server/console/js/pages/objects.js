// Objects of a bucket now, or as they were at an instant (`GET /v1/objects?at=`), a page at a
// time (the API's `next_after` cursor), and one object's history
// (`GET /v1/objects/{bucket}/{key}?history=true`).
//
// The form's choice lives in the address (`#/objects?bucket=&prefix=&at=`), so a listing can
// be bookmarked and Back returns to it; paging and the history stay within the page.

import * as api from "../api.js";
import { h, field, fill, guarded, json, time } from "../ui.js";

const PAGE = 50;

export function mount(root, { params, go }) {
  const page = new ObjectsPage(params, go);
  root.append(...page.render());
  if (page.query.bucket) page.list(null);
  return () => page.stop();
}

class ObjectsPage {
  constructor(params, go) {
    this.go = go;
    this.query = { bucket: params.get("bucket") || "", prefix: params.get("prefix") || "", at: params.get("at") || "" };
    this.afters = []; // the cursors of the pages before this one, for Previous
    this.after = null; // this page's cursor (null: the first page)
    this.next = null; // the API's `next_after`, null on the last page
    this.stopped = false;
  }

  render() {
    const input = (name) => h("input", { name, id: "objects-" + name, value: this.query[name] });
    this.bucket = input("bucket");
    this.prefix = input("prefix");
    this.at = input("at");
    this.at.placeholder = "now";
    const form = h(
      "form",
      { class: "row", id: "objects-form", onsubmit: (e) => (e.preventDefault(), this.submit()) },
      field("Bucket", this.bucket),
      field("Key prefix", this.prefix),
      field("At", this.at, "empty: now; RFC 3339, 14:00 (UTC today) or -2h"),
      h("button", { type: "submit", id: "objects-list" }, "List"),
    );
    this.caption = h("p", { id: "objects-caption", role: "status" });
    this.results = h("div", { id: "objects-results" });
    this.history = h("section", { id: "object-history", class: "panel", hidden: true, "aria-live": "polite" });
    return [h("h1", {}, "Objects"), form, this.caption, h("div", { class: "split" }, this.results, this.history)];
  }

  stop() {
    this.stopped = true;
  }

  submit() {
    const q = { bucket: this.bucket.value.trim(), prefix: this.prefix.value, at: this.at.value.trim() };
    const same = q.bucket === this.query.bucket && q.prefix === this.query.prefix && q.at === this.query.at;
    // The same query again (e.g. "now" a second time) would not change the address: list here.
    if (same) this.list(null);
    else this.go("objects", [], q);
  }

  /** The page of objects after `after` (null: the first). */
  async list(after) {
    const q = this.query;
    const answer = await guarded(() => api.get("/v1/objects" + api.query({ ...q, after, limit: PAGE })));
    if (!answer || this.stopped) return;
    this.after = after;
    this.next = answer.next_after || null;
    this.caption.textContent = describe(q, answer);
    fill(this.results, this.table(answer.objects), this.pager());
  }

  table(objects) {
    const rows = objects.map((o) => {
      const open = h("button", { type: "button", class: "link object-key", "data-key": o.key, onclick: () => this.showHistory(o.bucket, o.key) }, o.key);
      return h(
        "tr",
        { "data-key": o.key },
        h("td", {}, open),
        h("td", {}, o.size ?? ""),
        h("td", { class: "mono" }, o.etag ?? ""),
        h("td", {}, o.content_type ?? ""),
        h("td", {}, time(o.last_modified)),
        h("td", {}, o.sequence),
      );
    });
    const head = ["Key", "Size", "ETag", "Content type", "Last modified", "Seq"];
    return h(
      "table",
      { id: "objects-table", "data-at": this.query.at || "now" },
      h("caption", {}, objects.length ? `${objects.length} objects on this page` : "No objects"),
      h("thead", {}, h("tr", {}, head.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows),
    );
  }

  pager() {
    const previous = h("button", { type: "button", class: "secondary", id: "objects-prev", disabled: this.after === null, onclick: () => this.list(this.afters.pop() ?? null) }, "Previous page");
    const next = h("button", { type: "button", class: "secondary", id: "objects-next", disabled: !this.next, onclick: () => (this.afters.push(this.after), this.list(this.next)) }, "Next page");
    return h("nav", { class: "pager", "aria-label": "Pages of objects" }, previous, next);
  }

  /** One object's head and every change the index holds for it (now, whatever `at` is). */
  async showHistory(bucket, key) {
    const path = `/v1/objects/${encodeURIComponent(bucket)}/${api.keyPath(key)}?history=true`;
    const answer = await guarded(() => api.get(path));
    if (!answer || this.stopped) return;
    const rows = (answer.history || []).map((e) =>
      h(
        "tr",
        { "data-sequence": e.sequence },
        h("td", {}, e.sequence),
        h("td", {}, e.event_type),
        h("td", {}, time(e.event_time)),
        h("td", {}, e.size ?? ""),
        h("td", { class: "mono" }, e.etag ?? ""),
        h("td", { class: "mono" }, e.version_id ?? ""),
      ),
    );
    this.history.hidden = false;
    fill(
      this.history,
      h("h2", {}, `History of ${bucket}/${key}`),
      h("p", {}, answer.exists ? `Exists now, at sequence ${answer.sequence}.` : `Removed now (sequence ${answer.sequence}).`),
      h(
        "table",
        { id: "object-history-table" },
        h("caption", {}, `${rows.length} changes, oldest first`),
        h("thead", {}, h("tr", {}, ["Seq", "Type", "Event time", "Size", "ETag", "Version"].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, rows),
      ),
      answer.state ? [h("h2", {}, "Current state"), json(answer.state)] : null,
    );
    this.history.querySelector("h2").setAttribute("tabindex", "-1");
    this.history.querySelector("h2").focus();
  }
}

/** What the listing shows: the bucket now, or as of an instant and how it was rebuilt. */
function describe(q, answer) {
  const where = `${q.bucket}${q.prefix ? " / " + q.prefix + "…" : ""}`;
  if (!answer.as_of) return `${where} now.`;
  const a = answer.as_of;
  const from = a.snapshot ? "a snapshot" : "the log";
  return `${where} as of ${time(a.at)} (${a.time} time), rebuilt from ${from} with ${a.events_replayed} events replayed.`;
}
