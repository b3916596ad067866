// The console's one way to the API: the signed-in key as a bearer, problem+json errors turned
// into ApiError, a 401 signing the user out, and the server's reachability told to listeners.

const STORAGE = "nvcf-lite.console.key";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

const listeners = { signedOut: [], reachable: [] };
export function on(event, fn) {
  listeners[event].push(fn);
}
function emit(event, ...args) {
  for (const fn of listeners[event]) fn(...args);
}

export const session = {
  key: sessionStorage.getItem(STORAGE),
  keyId: null,
  scopes: new Set(),
  admin: false,
};

export function can(scope) {
  return scope === "admin" ? session.admin : session.scopes.has(scope);
}

let reachable = true;
function setReachable(value) {
  if (value !== reachable) {
    reachable = value;
    emit("reachable", value);
  }
}

async function send(path, { method = "GET", body, headers = {}, json = true, signal } = {}) {
  const init = { method, headers: { ...headers }, signal };
  if (session.key) init.headers.Authorization = `Bearer ${session.key}`;
  if (body !== undefined) {
    init.body = json ? JSON.stringify(body) : body;
    if (json) init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name !== "AbortError") setReachable(false);
    throw err;
  }
  setReachable(true);
  if (response.status === 401 && session.key) {
    signOut("The server no longer accepts this key (revoked, expired or unknown).");
  }
  return response;
}

async function problem(response) {
  let title = response.statusText;
  let detail = "";
  try {
    const data = await response.json();
    title = data.title || title;
    detail = data.detail || "";
  } catch {
    // not JSON: the status says it
  }
  return new ApiError(response.status, title, detail);
}

export async function api(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await problem(response);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export async function raw(path, options = {}) {
  return send(path, options);
}

export async function stream(path, onText, { signal, ...options } = {}) {
  const response = await send(path, { ...options, signal });
  if (!response.ok) throw await problem(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return response;
    onText(decoder.decode(value, { stream: true }), response);
  }
}

export async function signIn(key) {
  const form = new URLSearchParams({ credentials: key });
  const response = await send("/v3/keys/get-caller-info", {
    method: "POST",
    body: form.toString(),
    json: false,
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  if (!response.ok) throw await problem(response);
  const info = await response.json();
  session.key = key;
  session.keyId = info.keyId;
  session.scopes = new Set(info.scopes);
  sessionStorage.setItem(STORAGE, key);
  // Managing keys takes every scope; the server says whether this key may.
  const keys = await send("/v2/nvcf-lite/keys");
  session.admin = keys.ok;
  return info;
}

export function signOut(reason = "") {
  session.key = null;
  session.keyId = null;
  session.scopes = new Set();
  session.admin = false;
  sessionStorage.removeItem(STORAGE);
  emit("signedOut", reason);
}
