// Invoke: send a JSON body to a function and see the answer: 200 at once, a 202 polled at
// /pexec/status/{id} until it ends, or a text/event-stream read as it arrives.
import { api, can, raw, stream } from "./api.js";
import { field, h, replace } from "./dom.js";

export const title = "Invoke";
const NVCF = "/v2/nvcf";

export async function render(root) {
  if (!can("invoke_function")) {
    replace(root, h("h1", {}, "Invoke"), h("p", { class: "muted" }, "This key lacks the scope invoke_function."));
    return {};
  }
  const fn = h("select", { required: true });
  const version = h("input", { placeholder: "latest deployed (optional)", spellcheck: "false" });
  const body = h("textarea", { rows: "8", spellcheck: "false" }, '{"message": "hello"}');
  const poll = h("input", { type: "number", min: "0", max: "300", value: "5" });
  const sse = h("input", { type: "checkbox" });
  const status = h("p", { id: "invoke-status", role: "status", "aria-live": "polite" });
  const out = h("pre", { id: "invoke-output", class: "output", tabindex: "0", "aria-label": "Answer" });
  const form = h("form", { id: "invoke-form" },
    field("invoke-fn", "Function", fn), field("invoke-version", "Version id", version),
    field("invoke-body", "JSON body", body), field("invoke-poll", "NVCF-POLL-SECONDS (202 after)", poll),
    h("div", { class: "field check" }, sse, h("label", { for: "invoke-sse" }, "Stream the answer (Accept: text/event-stream)")),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Send")));
  sse.id = "invoke-sse";
  replace(root, h("h1", {}, "Invoke"), h("section", { class: "card" }, form),
    h("section", { class: "card", "aria-labelledby": "h-answer" }, h("h2", { id: "h-answer" }, "Answer"), status, out));
  await fillFunctions(fn);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    out.textContent = "";
    let json;
    try {
      json = JSON.stringify(JSON.parse(body.value));
    } catch (err) {
      status.textContent = `The body is not JSON: ${err.message}`;
      return;
    }
    const path = `${NVCF}/pexec/functions/${fn.value}${version.value.trim() ? `/versions/${version.value.trim()}` : ""}`;
    const headers = { "Content-Type": "application/json", "NVCF-POLL-SECONDS": String(poll.value || 0) };
    try {
      if (sse.checked) await streamed(path, json, headers, status, out);
      else await pexec(path, json, headers, status, out);
    } catch (err) {
      status.textContent = `Failed: ${err.message}`;
    }
  });
  return {};
}

async function fillFunctions(select) {
  let items = [];
  if (can("list_functions") || can("list_functions_details")) {
    const list = await api(`${NVCF}/functions?visibility=private`);
    const seen = new Map();
    for (const v of list.functions) seen.set(v.id, v.name);
    items = [...seen.entries()];
  }
  replace(select, items.map(([id, name]) => h("option", { value: id }, `${name} (${id.slice(0, 8)})`)));
}

async function pexec(path, json, headers, status, out) {
  let response = await raw(path, { method: "POST", body: json, json: false, headers });
  let polls = 0;
  while (response.status === 202) {
    const reqId = response.headers.get("NVCF-REQID");
    polls += 1;
    status.textContent = `202 accepted (request ${reqId}), polling… (${polls})`;
    response = await raw(`${NVCF}/pexec/status/${reqId}`, { headers: { "NVCF-POLL-SECONDS": "5" } });
  }
  const text = await response.text();
  status.textContent = `${response.status} ${response.statusText}${polls ? ` after ${polls} poll(s) of a 202` : ""}`;
  out.textContent = pretty(text);
}

async function streamed(path, json, headers, status, out) {
  status.textContent = "streaming…";
  const response = await stream(path, (text) => out.append(document.createTextNode(text)), {
    method: "POST", body: json, json: false, headers: { ...headers, Accept: "text/event-stream" },
  });
  status.textContent = `${response.status} ${response.statusText} (${response.headers.get("content-type") || ""}), stream ended`;
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
