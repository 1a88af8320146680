// Replay and restore jobs: a form whose "Dry run" shows the plan first, then "Start", a
// progress bar that follows the job (polled) with Cancel, and every job of both kinds, a page
// at a time (the API lists them all: the newest 100 finished ones of each kind are kept).
//
// Starting and cancelling need the `replay` scope: without it the forms and Cancel are not
// rendered (the API would refuse them anyway); the list and progress stay readable.

import * as api from "../api.js";
import { h, field, fill, flash, guarded, json, table, time } from "../ui.js";

const POLL_MS = 500;
const LIST_MS = 5000;
const PAGE = 20;

export function mount(root, { params }) {
  const page = new JobsPage();
  root.append(...page.render());
  page.refresh();
  const follow = params.get("job");
  if (follow) page.follow(kindOf(follow), follow);
  return () => page.stop();
}

/** `restore-…` / `replay-…`: the kind is the id's prefix. */
function kindOf(id) {
  return id.startsWith("replay-") ? "replay" : "restore";
}

class JobsPage {
  constructor() {
    this.jobs = []; // both kinds, newest first
    this.offset = 0; // the first row of the list's page
    this.followed = null; // {kind, id} of the job in the progress panel
    this.poll = 0; // the progress timer
    this.listTimer = setInterval(() => this.refresh(), LIST_MS);
    this.stopped = false;
  }

  render() {
    this.progress = h("section", { id: "job-progress", class: "panel", hidden: true, "aria-live": "polite" });
    this.list = h("div", { id: "jobs-list" });
    const forms = api.can("replay")
      ? [new RestoreForm(this).render(), new ReplayForm(this).render()]
      : [h("p", { class: "muted", id: "jobs-read-only" }, "Your token lacks the replay scope: you can follow jobs but not start or cancel them.")];
    return [h("h1", {}, "Replay & restore"), ...forms, this.progress, h("h2", {}, "Jobs"), this.list];
  }

  stop() {
    this.stopped = true;
    clearInterval(this.listTimer);
    clearTimeout(this.poll);
  }

  async refresh() {
    const [restores, replays] = await Promise.all([
      api.get("/v1/restores").catch((e) => (flash(e), { restores: [] })),
      api.get("/v1/replays").catch(() => ({ replays: [] })),
    ]);
    if (this.stopped) return;
    this.jobs = [...restores.restores, ...replays.replays].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    this.showList();
  }

  showList() {
    const shown = this.jobs.slice(this.offset, this.offset + PAGE);
    const rows = shown.map((j) =>
      h(
        "tr",
        { class: "selectable", tabindex: 0, "data-id": j.id, onclick: () => this.follow(j.kind, j.id), onkeydown: (e) => e.key === "Enter" && this.follow(j.kind, j.id) },
        h("td", { class: "mono" }, j.id),
        h("td", {}, j.kind),
        h("td", { class: stateClass(j.state) }, j.state),
        h("td", {}, `${j.progress.done} / ${j.progress.total}`),
        h("td", {}, summary(j)),
        h("td", {}, time(j.created_at)),
      ),
    );
    const last = Math.min(this.offset + PAGE, this.jobs.length);
    fill(
      this.list,
      table(this.jobs.length ? `Jobs ${this.offset + 1}–${last} of ${this.jobs.length}, newest first` : "No jobs yet",
        ["Id", "Kind", "State", "Progress", "What", "Created"], rows, { id: "jobs-table" }),
      h("nav", { class: "pager", "aria-label": "Pages of jobs" },
        h("button", { type: "button", class: "secondary", id: "jobs-prev", disabled: this.offset === 0, onclick: () => this.turn(-PAGE) }, "Newer"),
        h("button", { type: "button", class: "secondary", id: "jobs-next", disabled: last >= this.jobs.length, onclick: () => this.turn(PAGE) }, "Older")),
    );
  }

  turn(by) {
    this.offset = Math.max(0, this.offset + by);
    this.showList();
  }

  /** Show job `id` in the progress panel and poll it until it ends. */
  follow(kind, id) {
    clearTimeout(this.poll);
    this.followed = { kind, id };
    history.replaceState(null, "", "#/jobs" + api.query({ job: id }));
    this.tick();
  }

  async tick() {
    const { kind, id } = this.followed;
    let job;
    try {
      job = await api.get(`/v1/${kind}s/${encodeURIComponent(id)}`);
    } catch (e) {
      flash(e);
    }
    if (this.stopped || !this.followed || this.followed.id !== id) return;
    if (job) this.showProgress(job);
    if (!job || job.state === "running") this.poll = setTimeout(() => this.tick(), POLL_MS);
    else this.refresh();
  }

  showProgress(job) {
    const { done, total } = job.progress;
    const running = job.state === "running";
    // Until a job knows its total (a restore plans first) the bar is indeterminate.
    const bar = h("progress", { id: "job-progress-bar", max: total || 1, "aria-label": "Progress" });
    if (total || !running) bar.value = total ? done : 1;
    const cancel = running && api.can("replay")
      ? h("button", { type: "button", class: "danger", id: "job-cancel", "data-scope": "replay", onclick: () => this.cancel(job) }, "Cancel")
      : null;
    this.progress.hidden = false;
    fill(
      this.progress,
      h("h2", {}, `${job.kind} ${job.id}`),
      h("p", {}, h("span", { id: "job-state", class: stateClass(job.state), "data-state": job.state }, job.state), " · ", bar, " ",
        h("span", { id: "job-progress-text" }, `${done} / ${total}${total ? ` (${Math.floor((100 * done) / total)} %)` : ""}`), " ", cancel),
      job.error ? h("p", { class: "bad" }, job.error.message || JSON.stringify(job.error)) : null,
      h("details", { open: !running }, h("summary", {}, "Job (JSON)"), json(job)),
    );
  }

  async cancel(job) {
    const answer = await guarded(() => api.post(`/v1/${job.kind}s/${encodeURIComponent(job.id)}/cancel`, {}));
    if (answer) this.follow(job.kind, job.id);
  }

  /** A job was started: follow it and list it. */
  started(job) {
    this.follow(job.kind, job.id);
    this.refresh();
  }
}

function stateClass(state) {
  return { succeeded: "ok", failed: "bad", cancelled: "warn" }[state] || "";
}

function summary(job) {
  const s = job.spec || {};
  if (job.kind === "restore") return `${s.bucket}${s.prefix ? "/" + s.prefix : ""} to ${time(s.at)}`;
  return `${s.subscription} from ${time(s.from)} to ${time(s.to)}${s.dry_run ? " (dry run)" : ""}`;
}

/** The restore form: a dry run answers the plan at once; Start runs exactly that plan's instant. */
class RestoreForm {
  constructor(page) {
    this.page = page;
    this.plan = null; // the last dry run's answer, for the inputs it was made with
  }

  render() {
    this.bucket = h("input", { name: "bucket", id: "restore-bucket", required: true });
    this.prefix = h("input", { name: "prefix", id: "restore-prefix" });
    this.at = h("input", { name: "at", id: "restore-at", required: true, placeholder: "-1h" });
    this.rate = h("input", { name: "rate", id: "restore-rate", type: "number", min: "0", step: "any" });
    this.start = h("button", { type: "button", id: "restore-start", "data-scope": "replay", disabled: true, onclick: () => this.run() }, "Start restore");
    this.planArea = h("div", { id: "restore-plan-area" });
    const form = h(
      "form",
      { id: "restore-form", onsubmit: (e) => (e.preventDefault(), this.dryRun()), oninput: () => this.invalidate() },
      h("div", { class: "row" },
        field("Bucket", this.bucket),
        field("Key prefix", this.prefix),
        field("Restore to", this.at, "RFC 3339, 14:00 (UTC today) or -2h"),
        field("Objects/s", this.rate, "empty: as fast as possible"),
        h("button", { type: "submit", id: "restore-dry-run", "data-scope": "replay" }, "Dry run"),
        this.start),
      this.planArea,
    );
    return h("section", { class: "panel", "aria-labelledby": "restore-title" }, h("h2", { id: "restore-title" }, "Restore a bucket to an instant"), form);
  }

  spec() {
    const rate = parseFloat(this.rate.value);
    return { bucket: this.bucket.value.trim(), prefix: this.prefix.value, at: this.at.value.trim(), rate: rate > 0 ? rate : undefined };
  }

  /** Changed inputs need a new dry run before Start. */
  invalidate() {
    this.plan = null;
    this.start.disabled = true;
  }

  async dryRun() {
    const plan = await guarded(() => api.post("/v1/restores", { ...this.spec(), dry_run: true }));
    if (!plan) return;
    this.plan = plan;
    this.start.disabled = false;
    fill(this.planArea, planTable(plan));
  }

  async run() {
    if (!this.plan) return;
    // The plan's resolved instant, so "-1h" means the same moment the plan was made for.
    const job = await guarded(() => api.post("/v1/restores", { ...this.spec(), at: this.plan.at }));
    if (!job) return;
    this.invalidate();
    this.page.started(job);
  }
}

const ACTIONS = [
  ["recreate", "deleted since: put back"],
  ["revert", "other content since: put the old content back"],
  ["delete", "created since: delete"],
  ["metadata", "only metadata or content type differ"],
  ["tags", "only tags differ"],
];

/** Action | objects | examples, plus the keys whose content is no longer held. */
function planTable(plan) {
  const rows = ACTIONS.map(([action, meaning]) =>
    h(
      "tr",
      { "data-action": action },
      h("td", {}, action),
      h("td", { class: "count" }, plan.counts[action] || 0),
      h("td", {}, meaning),
      h("td", { class: "mono" }, (plan.samples[action] || []).join(", ")),
    ),
  );
  const unavailable = plan.unavailable || [];
  return [
    h("table", { id: "restore-plan" },
      h("caption", {}, `Plan: ${plan.bucket}${plan.prefix ? "/" + plan.prefix : ""} to ${time(plan.at)} — ${plan.objects} objects to change`),
      h("thead", {}, h("tr", {}, ["Action", "Objects", "Meaning", "Examples"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows)),
    unavailable.length
      ? table(`${unavailable.length} objects whose content is no longer held (left as they are)`, ["Key", "Reason"],
        unavailable.map((u) => [u.key, u.reason]), { id: "restore-unavailable" })
      : null,
  ];
}

/**
 * The replay form: re-deliver [from, to) to a subscription. Its dry run is itself a job
 * (it reads the range and counts what would be sent), so the plan shows when that job ends.
 */
class ReplayForm {
  constructor(page) {
    this.page = page;
    this.planned = null; // the spec of the last finished dry run
    this.poll = 0;
  }

  render() {
    this.subscription = h("input", { name: "subscription", id: "replay-subscription", required: true, list: "replay-subscriptions" });
    this.options = h("datalist", { id: "replay-subscriptions" });
    this.from = h("input", { name: "from", id: "replay-from", required: true, placeholder: "-1h" });
    this.to = h("input", { name: "to", id: "replay-to", placeholder: "now" });
    this.rate = h("input", { name: "rate", id: "replay-rate", type: "number", min: "0", step: "any" });
    this.start = h("button", { type: "button", id: "replay-start", "data-scope": "replay", disabled: true, onclick: () => this.run() }, "Start replay");
    this.planArea = h("div", { id: "replay-plan-area" });
    api.get("/v1/subscriptions").then((a) => fill(this.options, a.subscriptions.map((s) => h("option", { value: s.name })))).catch(() => {});
    const form = h(
      "form",
      { id: "replay-form", onsubmit: (e) => (e.preventDefault(), this.dryRun()), oninput: () => this.invalidate() },
      h("div", { class: "row" },
        field("Subscription", this.subscription),
        this.options,
        field("From", this.from, "RFC 3339, 14:00 or -2h"),
        field("To", this.to, "empty: now"),
        field("Events/s", this.rate, "empty: as fast as possible"),
        h("button", { type: "submit", id: "replay-dry-run", "data-scope": "replay" }, "Dry run"),
        this.start),
      this.planArea,
    );
    return h("section", { class: "panel", "aria-labelledby": "replay-title" }, h("h2", { id: "replay-title" }, "Re-deliver a time range to a subscription"), form);
  }

  spec() {
    const rate = parseFloat(this.rate.value);
    return { subscription: this.subscription.value.trim(), from: this.from.value.trim(), to: this.to.value.trim() || undefined, rate: rate > 0 ? rate : undefined };
  }

  invalidate() {
    this.planned = null;
    this.start.disabled = true;
  }

  async dryRun() {
    const job = await guarded(() => api.post("/v1/replays", { ...this.spec(), dry_run: true, first: 10 }));
    if (!job) return;
    fill(this.planArea, h("p", { class: "muted" }, `Dry run ${job.id} is reading the range…`));
    this.page.started(job);
    this.await(job.id, job.spec);
  }

  /** Poll the dry-run job until it ends, then show what the replay would send. */
  async await(id, spec) {
    if (this.page.stopped) return;
    const job = await api.get(`/v1/replays/${encodeURIComponent(id)}`).catch((e) => (flash(e), null));
    if (this.page.stopped) return;
    if (job && job.state === "running") {
      this.poll = setTimeout(() => this.await(id, spec), POLL_MS);
      return;
    }
    if (!job || job.state !== "succeeded") {
      fill(this.planArea, h("p", { class: "bad" }, `Dry run ${id} ended ${job ? job.state : "unknown"}.`));
      return;
    }
    // Start replays the same resolved range the dry run counted.
    this.planned = { subscription: spec.subscription, from: spec.from, to: spec.to, rate: spec.rate ?? undefined };
    this.start.disabled = false;
    fill(this.planArea, replayPlan(job));
  }

  async run() {
    if (!this.planned) return;
    const job = await guarded(() => api.post("/v1/replays", this.planned));
    if (!job) return;
    this.invalidate();
    this.page.started(job);
  }
}

function replayPlan(job) {
  const r = job.result || {};
  const byType = Object.entries(r.by_type || {}).map(([type, n]) => [type, String(n)]);
  return [
    h("p", {}, `Would send ${r.matched ?? 0} events (${r.filtered_out ?? 0} filtered out, ${r.skipped ?? 0} skipped) of ${job.progress.total} in the range.`),
    table("Plan: events per type", ["Event type", "Events"], byType, { id: "replay-plan" }),
    (r.first || []).length ? h("details", {}, h("summary", {}, `The first ${r.first.length} events`), json(r.first)) : null,
  ];
}
