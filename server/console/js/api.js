// The console's only way to the server: the public HTTP API, authenticated by the session
// cookie the login endpoint sets (HttpOnly, so this code never sees the token), with the
// session's CSRF token on every state-changing call.

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** What `/ui/session` says: whether the API needs a token, and this browser's grant. */
export const session = {
  auth: false,
  loggedIn: false,
  tokenId: null,
  scopes: [],
  buckets: [],
  csrf: null,
};

/** Whether the session may use `scope` (an open server allows everything). */
export function can(scope) {
  if (!session.auth) return true;
  return session.scopes.includes("admin") || session.scopes.includes(scope);
}

function adopt(answer) {
  session.auth = !!answer.auth;
  session.loggedIn = !!answer.logged_in;
  session.tokenId = answer.token_id || null;
  session.scopes = answer.scopes || [];
  session.buckets = answer.buckets || [];
  session.csrf = answer.csrf || null;
  return session;
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    /* not JSON */
  }
  const e = body && body.error;
  if (e) return new ApiError(resp.status, e.code, e.message, e.field);
  return new ApiError(resp.status, "http_" + resp.status, `${resp.status} ${resp.statusText}`);
}

/**
 * `method path` with an optional body: an object is sent as JSON, a Blob, ArrayBuffer or
 * string as it is (with `contentType`). Answers the parsed JSON (or null for no content);
 * throws ApiError with the server's code and message otherwise.
 */
export async function call(method, path, body, contentType) {
  const headers = {};
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD" && session.csrf) headers["x-csrf-token"] = session.csrf;
  if (body !== undefined && body !== null) {
    if (body instanceof Blob || body instanceof ArrayBuffer || typeof body === "string") {
      init.body = body;
      headers["content-type"] = contentType || "application/octet-stream";
    } else {
      init.body = JSON.stringify(body);
      headers["content-type"] = "application/json";
    }
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && session.auth) window.dispatchEvent(new CustomEvent("tidemark:unauthorized"));
    throw err;
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    return text;
  }
}

export const get = (path) => call("GET", path);
export const post = (path, body, contentType) => call("POST", path, body, contentType);
export const put = (path, body, contentType) => call("PUT", path, body, contentType);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);

/** The current session (no token needed to ask). */
export async function loadSession() {
  return adopt(await get("/ui/session"));
}

/** Trade a token for a session cookie; the token is not kept in the page. */
export async function login(token) {
  return adopt(await post("/ui/login", { token }));
}

export async function logout() {
  await post("/ui/logout", {});
  return adopt({ auth: session.auth });
}

/** `encodeURIComponent` per path segment, keeping the slashes of an object key. */
export function keyPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}
