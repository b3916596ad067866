// Assets: list, upload (create, then PUT the bytes to the signed upload URL), delete.
import { api, can, raw } from "./api.js";
import { field, h, redraw, replace, table } from "./dom.js";

export const title = "Assets";
const ASSETS = "/v2/nvcf/assets";

export async function render(root) {
  if (!can("invoke_function")) {
    replace(root, h("h1", {}, "Assets"), h("p", { class: "muted" }, "This key lacks the scope invoke_function."));
    return {};
  }
  const file = h("input", { type: "file", required: true });
  const description = h("input", { required: true, value: "" });
  const message = h("p", { id: "asset-message", role: "status", "aria-live": "polite" });
  const list = h("div", { id: "asset-list" });
  const form = h("form", { id: "asset-form" }, field("asset-file", "File", file),
    field("asset-description", "Description", description),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Upload")));
  replace(root, h("h1", {}, "Assets"),
    h("section", { class: "card", "aria-labelledby": "h-up" }, h("h2", { id: "h-up" }, "Upload"), form, message),
    h("section", { class: "card", "aria-labelledby": "h-list" }, h("h2", { id: "h-list" }, "Assets of the account"), list));

  async function refresh() {
    const found = await api(ASSETS);
    const details = await Promise.all(found.assets.map((a) => api(`${ASSETS}/${a.assetId}`).then((d) => d.asset, () => a)));
    redraw(list, details, (assets) => table("Assets", ["Asset", "Content type", "Description", "Created", ""], assets.map((a) => [
      h("code", {}, a.assetId), a.contentType || "", a.description || "", a.createdAt || "",
      h("button", { type: "button", class: "danger", "aria-label": `Delete asset ${a.assetId}`,
        onclick: () => remove(a.assetId) }, "Delete"),
    ])));
  }

  async function remove(id) {
    try {
      await api(`${ASSETS}/${id}`, { method: "DELETE" });
      message.textContent = `Deleted ${id}`;
      await refresh();
    } catch (err) {
      message.textContent = `Delete failed: ${err.message}`;
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const contentType = chosen.type || "application/octet-stream";
    try {
      const asset = await api(ASSETS, { method: "POST", body: { contentType, description: description.value } });
      const put = await raw(asset.uploadUrl, { method: "PUT", body: chosen, json: false, headers: {
        "Content-Type": contentType, "x-amz-meta-nvcf-asset-description": description.value } });
      if (!put.ok) throw new Error(`upload answered ${put.status}`);
      message.textContent = `Uploaded ${asset.assetId}`;
      form.reset();
      await refresh();
    } catch (err) {
      message.textContent = `Upload failed: ${err.message}`;
    }
  });
  return { refresh };
}
