// One function: versions and their deployment specs (edit, deploy, undeploy), instances with
// their cold-start breakdown, the last requests, and the container logs followed live.
import { api, can, stream } from "./api.js";
import { age, badge, field, h, ms, replace, table } from "./dom.js";

export const title = "Function";
const NVCF = "/v2/nvcf";
const LOG_LINES_KEPT = 500;

export async function render(root, fid) {
  const head = h("h1", {}, "Function");
  const versions = h("div", { id: "versions" });
  const instances = h("div", { id: "instances" });
  const requests = h("div", { id: "requests" });
  const message = h("p", { class: "error", role: "alert", id: "fn-message" });
  const logs = h("pre", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Container logs" });
  replace(root, head, h("p", {}, h("code", {}, fid)), message,
    h("section", { class: "card", "aria-labelledby": "h-versions" }, h("h2", { id: "h-versions" }, "Versions and deployments"), versions),
    h("section", { class: "card", "aria-labelledby": "h-inst" }, h("h2", { id: "h-inst" }, "Instances"), instances),
    h("section", { class: "card", "aria-labelledby": "h-req" }, h("h2", { id: "h-req" }, "Last requests"), requests),
    h("section", { class: "card", "aria-labelledby": "h-logs" }, h("h2", { id: "h-logs" }, "Container logs (live)"), logs));
  const gpus = can("list_cluster_groups") ? await gpuChoices() : [];
  const blocks = new Map(); // versionId -> { el, line }: built once, the line redrawn
  const abort = new AbortController();
  if (can("list_functions_details")) followLogs(fid, logs, abort.signal);
  else logs.textContent = "Reading logs takes the scope list_functions_details.";

  async function refresh() {
    const status = can("list_functions_details") ? await api("/v2/nvcf-lite/status") : null;
    const fn = status ? status.functions.find((f) => f.functionId === fid) : null;
    const list = fn ? null : await api(`${NVCF}/functions/${fid}/versions`);
    head.textContent = fn ? fn.name : list.functions[0].name;
    const vs = fn ? fn.versions : list.functions.map((v) => ({ versionId: v.versionId, status: v.status, queueDepth: 0, instances: [] }));
    for (const v of vs) {
      if (!blocks.has(v.versionId)) {
        const form = can("deploy_function") ? await deployForm(fid, v, gpus, message) : null;
        const line = h("p", { class: "version-line" });
        const el = h("div", { class: "version", "data-version": v.versionId }, line, form ? form.el : "");
        blocks.set(v.versionId, { el, line, form });
        versions.append(el);
      }
      // only the status line is redrawn: a form being edited keeps its values and focus
      const block = blocks.get(v.versionId);
      replace(block.line, versionLine(v));
      if (block.form && status) block.form.sync(v);
    }
    replace(instances, instanceTable(vs));
    if (can("list_functions_details")) {
      const last = await api(`/v2/nvcf-lite/functions/${fid}/requests`);
      replace(requests, requestTable(last.requests));
    }
  }
  return { refresh, stop: () => abort.abort() };
}

function versionLine(v) {
  return [h("code", {}, v.versionId), " ", badge(v.status), " queue ",
    h("span", { class: "queue" }, String(v.queueDepth)),
    v.reason ? h("span", { class: "reason" }, ` — ${v.reason}`) : ""];
}

async function gpuChoices() {
  try {
    const groups = await api(`${NVCF}/clusterGroups`);
    return groups.clusterGroups.flatMap((g) => g.gpus);
  } catch {
    return [];
  }
}

async function deployForm(fid, v, gpus, message) {
  const path = `${NVCF}/deployments/functions/${fid}/versions/${v.versionId}`;
  let spec = { gpu: gpus[0]?.name || "CPU", minInstances: 1, maxInstances: 1, maxRequestConcurrency: 1 };
  let deployed = false;
  try {
    spec = { ...spec, ...(await api(path)).deployment.deploymentSpecifications[0] };
    deployed = true;
  } catch {
    // not deployed: the defaults
  }
  const inputs = specInputs(spec, gpus);
  const deploy = h("button", { type: "submit", class: "deploy" });
  const undeploy = h("button", { type: "button", class: "undeploy danger" }, "Undeploy");
  const id = (name) => `${name}-${v.versionId}`;
  const labels = { gpu: "GPU", type: "Instance type", min: "Min instances", max: "Max instances", conc: "Max concurrency" };
  const el = h("form", { class: "deploy-form", "aria-label": `Deployment of version ${v.versionId}` },
    Object.entries(labels).map(([name, label]) => field(id(name), label, inputs[name])),
    h("div", { class: "actions" }, deploy, undeploy));
  const show = (now) => {
    deployed = now;
    deploy.textContent = now ? "Update deployment" : "Deploy";
    undeploy.hidden = !now;
  };
  show(deployed);
  let settledAt = 0; // a status read while our own change was in flight is older than it
  const act = (what, method, body, after) => async () => {
    settledAt = Infinity;
    try {
      await api(path, { method, body });
      show(after);
      message.textContent = "";
    } catch (err) {
      message.textContent = `${what} failed: ${err.message}`;
    }
    settledAt = Date.now() + 3000;
  };
  el.addEventListener("submit", (event) => {
    event.preventDefault();
    act("Deploy", deployed ? "PUT" : "POST", specBody(inputs), true)();
  });
  undeploy.addEventListener("click", act("Undeploy", "DELETE", undefined, false));
  // deployed or not as the status says (another client may have changed it)
  const sync = (version) => Date.now() > settledAt && show(Boolean(version.deploymentId));
  return { el, sync };
}

function specInputs(spec, gpus) {
  const num = (value) => h("input", { type: "number", min: "0", value: String(value ?? "") });
  return {
    gpu: gpus.length
      ? h("select", {}, gpus.map((g) => h("option", { value: g.name, selected: g.name === spec.gpu }, g.name)))
      : h("input", { value: spec.gpu }),
    type: h("input", { value: spec.instanceType || "", placeholder: "default" }),
    min: num(spec.minInstances),
    max: num(spec.maxInstances),
    conc: num(spec.maxRequestConcurrency),
  };
}

function specBody(inputs) {
  return { deploymentSpecifications: [{
    gpu: inputs.gpu.value, instanceType: inputs.type.value || undefined,
    minInstances: Number(inputs.min.value), maxInstances: Number(inputs.max.value),
    maxRequestConcurrency: Number(inputs.conc.value) }] };
}

function instanceTable(vs) {
  const rows = vs.flatMap((v) => v.instances.map((i) => {
    const c = i.coldStart;
    return [
      h("code", {}, i.instanceId.slice(0, 8)), h("code", {}, v.versionId.slice(0, 8)), badge(i.state),
      age(i.ageS), i.gpuUuids.join(", ") || "CPU", `${i.inFlight} / ${i.maxRequestConcurrency}`,
      c ? c.kind : "", c ? ms(c.imagePullS) : "", c ? ms(c.containerStartS) : "",
      c ? ms(c.firstHealthyS) : "", c ? ms(c.firstByteS) : "", i.error || "",
    ];
  }));
  return table("Instances (cold start: pull, start, first healthy, first byte)",
    ["Instance", "Version", "State", "Age", "GPU units", "In flight", "Start kind", "Pull", "Container start", "First healthy", "First byte", "Error"], rows);
}

function requestTable(requests) {
  return table("The last requests that ended", ["Request", "Version", "Status", "Latency", "Ended"],
    requests.map((r) => [h("code", {}, r.requestId.slice(0, 8)), h("code", {}, r.versionId.slice(0, 8)),
      String(r.status), `${r.latencyMs} ms`, new Date(r.endedAt * 1000).toLocaleTimeString()]));
}

async function followLogs(fid, pre, signal) {
  while (!signal.aborted) {
    try {
      await stream(`${NVCF}/functions/${fid}/logs?follow=true&tail=100`, (text) => {
        pre.append(document.createTextNode(text));
        const lines = pre.textContent.split("\n");
        if (lines.length > LOG_LINES_KEPT) pre.textContent = lines.slice(-LOG_LINES_KEPT).join("\n");
        pre.scrollTop = pre.scrollHeight;
      }, { signal });
    } catch {
      // not deployed yet, or the server went away: try again shortly
    }
    await new Promise((resolve) => setTimeout(resolve, 3000));
    if (!signal.aborted) pre.textContent = "";
  }
}
