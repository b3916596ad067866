// Overview: the GPU map, every function version with status and why, queues, traffic plots.
import { api, can } from "./api.js";
import { TimePlot } from "./charts.js";
import { badge, h, replace, table } from "./dom.js";

export const title = "Overview";

export async function render(root) {
  if (!can("list_functions_details")) {
    replace(root, h("h1", {}, "Overview"),
      h("p", { class: "muted" }, "This key lacks the scope list_functions_details, which the overview reads."));
    return {};
  }
  const gpus = h("div", { class: "gpu-map", id: "gpu-map" });
  const functions = h("div", { id: "functions" });
  const rate = h("div", { class: "plot", id: "plot-rate" });
  const latency = h("div", { class: "plot", id: "plot-latency" });
  const updated = h("p", { class: "muted small", id: "updated" });
  replace(root,
    h("h1", {}, "Overview"),
    h("section", { class: "card", "aria-labelledby": "h-gpus" }, h("h2", { id: "h-gpus" }, "GPUs"), gpus),
    h("section", { class: "card", "aria-labelledby": "h-fns" }, h("h2", { id: "h-fns" }, "Functions"), functions),
    h("section", { class: "card plots", "aria-labelledby": "h-traffic" },
      h("h2", { id: "h-traffic" }, "Traffic, last minutes"), rate, latency),
    updated);
  const plots = [new TimePlot(rate, "Requests/s", "req/s"), new TimePlot(latency, "Latency p50 / p99", "ms")];

  async function refresh() {
    const [status, traffic] = await Promise.all([
      api("/v2/nvcf-lite/status"),
      api("/v2/nvcf-lite/traffic"),
    ]);
    const names = new Map(status.functions.map((f) => [f.functionId, f.name]));
    replace(gpus, gpuMap(status, names));
    replace(functions, functionTable(status));
    drawTraffic(plots, traffic, names);
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }
  return { refresh, stop: () => plots.forEach((p) => p.stop()) };
}

function gpuMap(status, names) {
  const units = status.units || [];
  if (!units.length) return h("p", { class: "muted" }, "No GPU units on this host (CPU instances only).");
  return units.map((u) => {
    const holder = u.instanceId
      ? h("span", {}, "held by ", h("a", { href: `#/function/${u.functionId}` }, names.get(u.functionId) || u.functionId),
          h("br"), h("code", {}, u.instanceId.slice(0, 8)))
      : h("span", { class: "muted" }, u.held ? "held" : "free");
    return h("div", { class: `gpu ${u.held ? "held" : "free"}`, "data-unit": u.unitId },
      h("strong", {}, u.simulated ? u.gpu : `#${u.index} ${u.gpu}`),
      h("span", { class: "small" }, `${Math.round(u.memoryMb / 1024)} GiB${u.simulated ? " · simulated" : ""}`),
      h("code", { class: "small" }, u.unitId),
      holder);
  });
}

function functionTable(status) {
  const rows = [];
  for (const f of status.functions) {
    for (const v of f.versions) {
      const ready = v.instances.filter((i) => i.state === "ready").length;
      rows.push([
        h("a", { href: `#/function/${f.functionId}`, class: "fn-name" }, f.name),
        h("code", {}, v.versionId.slice(0, 8)),
        badge(v.status),
        v.reason || "",
        h("span", { class: "queue", "data-version": v.versionId }, String(v.queueDepth)),
        `${ready} / ${v.instances.length}`,
      ]);
    }
  }
  return table("Function versions", ["Function", "Version", "Status", "Why", "Queue", "Ready / instances"], rows);
}

function drawTraffic(plots, traffic, names) {
  const label = (id) => names.get(id) || id.slice(0, 8);
  const points = (f, key) => f.points.map((p) => [p.at, p[key] ?? null]);
  plots[0].update(traffic.functions.map((f) => ({ label: label(f.functionId), points: points(f, "requestsPerS") })));
  plots[1].update(traffic.functions.flatMap((f, color) => [
    { label: `${label(f.functionId)} p50`, points: points(f, "p50Ms"), color },
    { label: `${label(f.functionId)} p99`, points: points(f, "p99Ms"), color, dash: true },
  ]));
}
