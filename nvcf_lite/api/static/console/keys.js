// Keys: list, create (the plaintext is shown once), revoke. Only a key with every scope may.
import { api, can, session, signOut } from "./api.js";
import { field, h, redraw, replace, table } from "./dom.js";

export const title = "Keys";
const KEYS = "/v2/nvcf-lite/keys";

export async function render(root) {
  if (!can("admin")) {
    replace(root, h("h1", {}, "Keys"), h("p", { class: "muted" }, "Managing keys takes a key with every scope."));
    return {};
  }
  const description = h("input", { value: "" });
  const functions = h("input", { placeholder: "FID, FID/* or FID/VID, comma-separated (empty: all)", spellcheck: "false" });
  const boxes = [...session.scopes].sort().map((s) => {
    const box = h("input", { type: "checkbox", id: `scope-${s}`, value: s, class: "scope" });
    return h("div", { class: "field check" }, box, h("label", { for: `scope-${s}` }, s));
  });
  const message = h("p", { id: "key-message", role: "status", "aria-live": "polite" });
  const created = h("div", { id: "key-created" });
  const list = h("div", { id: "key-list" });
  const form = h("form", { id: "key-form" }, field("key-description", "Description", description),
    h("fieldset", {}, h("legend", {}, "Scopes"), h("div", { class: "scopes" }, boxes)),
    field("key-functions", "Functions", functions),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create key")));
  replace(root, h("h1", {}, "Keys"),
    h("section", { class: "card", "aria-labelledby": "h-new" }, h("h2", { id: "h-new" }, "New key"), form, message, created),
    h("section", { class: "card", "aria-labelledby": "h-keys" }, h("h2", { id: "h-keys" }, "Keys"), list));

  async function refresh() {
    const found = await api(KEYS);
    redraw(list, found.keys, (keys) => table("API keys", ["Key", "Prefix", "Description", "Scopes", "Created", "Revoked", ""],
      keys.map((k) => [h("code", {}, k.keyId), h("code", {}, k.keyPrefix), k.description,
        k.scopes.join(", "), k.createdAt, k.revokedAt || "",
        k.revokedAt ? "" : h("button", { type: "button", class: "danger revoke", "data-key": k.keyId,
          "aria-label": `Revoke key ${k.keyId}`, onclick: () => revoke(k.keyId) },
          k.keyId === session.keyId ? "Revoke (this key)" : "Revoke")])));
  }

  async function revoke(id) {
    try {
      await api(`${KEYS}/${id}`, { method: "DELETE" });
    } catch (err) {
      message.textContent = `Revoke failed: ${err.message}`;
      return;
    }
    if (id === session.keyId) {
      signOut("You revoked the key you signed in with.");
      return;
    }
    message.textContent = `Revoked ${id}`;
    await refresh();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const scopes = [...form.querySelectorAll("input.scope:checked")].map((b) => b.value);
    const fns = functions.value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      const answer = await api(KEYS, { method: "POST", body: { scopes, functions: fns, description: description.value } });
      message.textContent = `Created ${answer.apiKey.keyId}. Copy the key now: it is not shown again.`;
      replace(created, h("label", { for: "key-plaintext" }, "New key"),
        h("input", { id: "key-plaintext", readonly: true, value: answer.key, class: "secret" }));
      form.reset();
      await refresh();
    } catch (err) {
      message.textContent = `Create failed: ${err.message}`;
    }
  });
  return { refresh };
}
