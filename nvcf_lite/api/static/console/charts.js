// Time plots of the traffic window, drawn by the vendored uPlot.
import uPlot from "./vendor/uplot/uPlot.esm.js";

const WINDOW_S = 300;
const COLORS = ["#76b900", "#1f77b4", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];

// One plot; `series` is [{label, points: [[at, value], ...], color?, dash?}], redrawn in place.
export class TimePlot {
  constructor(container, title, unit) {
    this.container = container;
    this.title = title;
    this.unit = unit;
    this.plot = null;
    this.labels = "";
    this.span = [0, 1];
    this.onResize = () => {
      if (this.plot) this.plot.setSize({ width: this.width(), height: 200 });
    };
    window.addEventListener("resize", this.onResize);
  }

  width() {
    return Math.max(260, this.container.clientWidth || 600);
  }

  update(series) {
    const times = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort(
      (a, b) => a - b,
    );
    const last = times.length ? times[times.length - 1] : Date.now() / 1000;
    this.span = [Math.min(times[0] ?? last, last - WINDOW_S), last];
    const data = [times];
    for (const s of series) {
      const byTime = new Map(s.points);
      data.push(times.map((t) => (byTime.has(t) ? byTime.get(t) : null)));
    }
    const labels = series.map((s) => s.label).join("\u0000");
    if (this.plot && labels === this.labels) {
      this.plot.setData(data);
      return;
    }
    if (this.plot) this.plot.destroy();
    this.labels = labels;
    this.plot = new uPlot(
      {
        title: this.title,
        width: this.width(),
        height: 200,
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: COLORS[(s.color ?? i) % COLORS.length],
            dash: s.dash ? [6, 4] : undefined,
            width: 2,
            spanGaps: false,
            value: (_u, v) => (v === null || v === undefined ? "–" : `${v} ${this.unit}`),
          })),
        ],
        axes: [{}, { label: this.unit, size: 60 }],
        scales: {
          // the last WINDOW_S seconds at least, so one point is not stretched over years
          x: { time: true, range: () => this.span },
          y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] },
        },
      },
      data,
      this.container,
    );
  }

  stop() {
    window.removeEventListener("resize", this.onResize);
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
