// Small DOM helpers shared by the pages: no framework, elements built with `h`.

/**
 * `h("button", {type: "button", onclick: f, class: "x"}, "text", child)`: attributes whose
 * name starts with `on` become listeners; `hidden`, `disabled`, `checked`, `value` and
 * `selected` are set as properties; `null`/`false` children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (["hidden", "disabled", "checked", "value", "selected"].includes(k)) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A labelled form field: `field("Bucket", input)`. */
export function field(label, control, hint) {
  const id = control.id || "f-" + Math.random().toString(36).slice(2, 9);
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", {}, hint) : null);
}

/** A table with a header row; `rows` are arrays of cells (strings or nodes). */
export function table(caption, headers, rows, attrs) {
  return h(
    "table",
    attrs || {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => h("td", {}, c)))))),
  );
}

/** Show an error (or a notice) in the page's alert area. */
export function flash(message, kind) {
  const area = document.getElementById("flash");
  area.className = kind || "error";
  area.textContent = message instanceof Error ? message.message : String(message);
  area.hidden = !area.textContent;
}

export function clearFlash() {
  flash("");
}

/** Run `f`, showing what it throws instead of losing it. */
export async function guarded(f) {
  try {
    clearFlash();
    return await f();
  } catch (e) {
    flash(e);
    return undefined;
  }
}

/** Pretty JSON in a <pre>. */
export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function time(value) {
  if (!value) return "";
  const d = new Date(value);
  return isNaN(d) ? String(value) : d.toISOString().replace("T", " ").replace("Z", "");
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}
