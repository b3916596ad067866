// The console shell: sign-in, the page router (#/page/arg), and a bounded refresh loop.
import { ApiError, can, on, session, signIn, signOut } from "./api.js";
import { h, replace } from "./dom.js";
import * as overview from "./overview.js";
import * as fn from "./function.js";
import * as invoke from "./invoke.js";
import * as assets from "./assets.js";
import * as keys from "./keys.js";

const PAGES = { overview, function: fn, invoke, assets, keys };
const REFRESH_MS = 2000; // at most one refresh of the visible page every 2 s

const $ = (id) => document.getElementById(id);
let current = null; // { name, view: { refresh?, stop? } }
let timer = null;
let signOutNote = "";

function banner(text, kind) {
  const el = $("banner");
  el.hidden = !text;
  el.className = `banner ${kind || ""}`;
  el.textContent = text || "";
}

on("reachable", (ok) => {
  if (ok) banner("");
  else banner("The server is unreachable; retrying every 2 s…", "bad");
});
on("signedOut", (reason) => {
  signOutNote = reason;
  showSignIn();
});

function stopPage() {
  if (timer) clearInterval(timer);
  timer = null;
  if (current && current.view && current.view.stop) current.view.stop();
  current = null;
}

function showSignIn() {
  stopPage();
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  replace($("page"));
  $("signin").hidden = false;
  $("signin-error").textContent = signOutNote;
  $("signin-key").focus();
}

function showNav() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  for (const link of $("nav").querySelectorAll("a")) {
    link.hidden = Boolean(link.dataset.scope) && !can(link.dataset.scope);
  }
  $("who").textContent = `key ${session.keyId || ""}`;
}

async function route() {
  if (!session.key) return showSignIn();
  showNav();
  const [name, ...args] = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const page = PAGES[name] || overview;
  stopPage();
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = h("div", { class: "view" });
  replace($("page"), root);
  const view = (await page.render(root, ...args.map(decodeURIComponent))) || {};
  current = { name, view };
  document.title = `${page.title || name} · nvcf-lite console`;
  if (view.refresh) {
    const tick = async () => {
      try {
        await view.refresh();
      } catch {
        // shown by the page or the banner; the next tick tries again
      }
    };
    await tick();
    timer = setInterval(tick, REFRESH_MS);
  }
}

async function submitSignIn(event) {
  event.preventDefault();
  const key = $("signin-key").value.trim();
  $("signin-error").textContent = "";
  try {
    await signIn(key);
  } catch (err) {
    $("signin-error").textContent = `Sign-in failed: ${err.message}`;
    return;
  }
  $("signin-key").value = "";
  signOutNote = "";
  if (!location.hash) location.hash = "#/overview";
  await route();
}

async function start() {
  $("signin-form").addEventListener("submit", submitSignIn);
  $("signout").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", route);
  await resume();
}

// A reload keeps the tab's key: check it again (an unreachable server is retried, not a
// reason to forget the key; a refused key is).
async function resume() {
  if (session.key) {
    try {
      await signIn(session.key);
    } catch (err) {
      if (err instanceof ApiError) {
        signOut("Sign in again: the stored key was not accepted.");
      } else {
        setTimeout(resume, REFRESH_MS);
      }
      return;
    }
  }
  await route();
}

start();
