// The console's shell: session and sign-in, the navigation, and a hash router that mounts
// one page module at a time (each page returns a cleanup function that stops its timers and
// streams).

import * as api from "./api.js";
import { h, field, flash, clearFlash, fill } from "./ui.js";

const pages = {
  watch: () => import("./pages/watch.js"),
  subscriptions: () => import("./pages/subscriptions.js"),
  filters: () => import("./pages/filters.js"),
  jobs: () => import("./pages/jobs.js"),
  objects: () => import("./pages/objects.js"),
};

let cleanup = null;
let generation = 0;

/** `#/subscriptions/orders?x=1` → {page: "subscriptions", rest: ["orders"], params}. */
export function parseRoute(hash) {
  const [path, q] = (hash.replace(/^#\/?/, "") || "watch").split("?");
  const [page, ...rest] = path.split("/").map(decodeURIComponent);
  return { page, rest, params: new URLSearchParams(q || "") };
}

/** Go to `page` with `rest` segments and `params` (an object). */
export function go(page, rest, params) {
  const path = [page, ...(rest || [])].map(encodeURIComponent).join("/");
  window.location.hash = "#/" + path + api.query(params || {});
}

async function route() {
  const mine = ++generation;
  if (cleanup) {
    try {
      cleanup();
    } catch (_) {
      /* a page's cleanup must not stop navigation */
    }
    cleanup = null;
  }
  clearFlash();
  const main = document.getElementById("main");
  if (api.session.auth && !api.session.loggedIn) {
    showLogin(main);
    return;
  }
  const { page, rest, params } = parseRoute(window.location.hash);
  const load = pages[page];
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!load) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, `There is no page "${page}".`));
    return;
  }
  fill(main, h("p", { class: "muted" }, "Loading…"));
  const module = await load();
  if (mine !== generation) return;
  main.replaceChildren();
  cleanup = module.mount(main, { rest, params, go }) || null;
}

function showChrome() {
  const signedIn = !api.session.auth || api.session.loggedIn;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("logout").hidden = !(api.session.auth && api.session.loggedIn);
  const who = document.getElementById("who");
  who.textContent = api.session.auth && api.session.loggedIn
    ? `${api.session.tokenId} (${api.session.scopes.join(", ")}${api.session.buckets.length ? "; buckets " + api.session.buckets.join(", ") : ""})`
    : api.session.auth ? "" : "open server (no token configured)";
}

function showLogin(main) {
  const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true, id: "login-token" });
  const form = h(
    "form",
    { class: "login", id: "login-form" },
    h("h1", {}, "Sign in"),
    h("p", {}, "This server needs an API token. It is exchanged for a session cookie and not kept in the page."),
    field("API token", token),
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api.login(token.value.trim());
      token.value = "";
      showChrome();
      route();
    } catch (e) {
      flash(e);
      token.focus();
    }
  });
  fill(main, form);
  token.focus();
}

async function start() {
  try {
    await api.loadSession();
  } catch (e) {
    flash(e);
  }
  showChrome();
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api.logout();
    } catch (e) {
      flash(e);
    }
    showChrome();
    route();
  });
  window.addEventListener("tidemark:unauthorized", async () => {
    await api.loadSession().catch(() => {});
    showChrome();
    if (!api.session.loggedIn) route();
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
