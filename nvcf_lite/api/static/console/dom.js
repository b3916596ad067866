// Building the page from data: every string goes in as text (textContent), never as markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function table(caption, headers, rows) {
  return h("div", { class: "scroll" },
    h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.length
        ? rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))
        : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none")))));
}

export function field(id, label, input) {
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

export function badge(status) {
  const kind = String(status || "").toLowerCase();
  return h("span", { class: `badge b-${kind}` }, status || "?");
}

export function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function ms(seconds) {
  return seconds === null || seconds === undefined ? "–" : `${(seconds * 1000).toFixed(0)} ms`;
}

const drawn = new WeakMap();

// Redraw `el` from `data` only when the data changed, so a refresh of unchanged data keeps
// the focus of a button inside it (keyboard users) and costs nothing.
export function redraw(el, data, build) {
  const key = JSON.stringify(data);
  if (drawn.get(el) === key) return;
  drawn.set(el, key);
  replace(el, build(data));
}
