// Small hand-written SVG plots for the vitrify dashboard (no library, no build step).
// scatterPlot: points over time with dashed threshold lines; linePlot: curves such as an FSC.
(function () {
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PLOT = {width: 330, height: 190, left: 52, right: 10, top: 22, bottom: 34};

function svgElement(name, attributes, parent) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}

function niceTicks(low, high, count) {
  if (!(high > low)) { high = low + 1; }
  const raw = (high - low) / count;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(f => f * power).find(s => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + 1e-9 * step; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function formatTick(value) {
  const abs = Math.abs(value);
  if (abs >= 10000) return (value / 1000).toFixed(0) + "k";
  if (abs >= 100 || value === Math.round(value)) return value.toFixed(0);
  return value.toPrecision(3);
}

function extent(values, extra) {
  const finite = values.concat(extra || []).filter(v => v !== null && Number.isFinite(v));
  if (!finite.length) return [0, 1];
  let low = Math.min(...finite), high = Math.max(...finite);
  if (low === high) { low -= 1; high += 1; }
  const pad = (high - low) * 0.06;
  return [low - pad, high + pad];
}

function axes(svg, xRange, yRange, xLabel, yLabel, title) {
  const {width, height, left, right, top, bottom} = PLOT;
  const sx = v => left + (v - xRange[0]) / (xRange[1] - xRange[0]) * (width - left - right);
  const sy = v => height - bottom - (v - yRange[0]) / (yRange[1] - yRange[0]) * (height - top - bottom);
  svgElement("rect", {x: left, y: top, width: width - left - right, height: height - top - bottom,
                      class: "frame"}, svg);
  for (const t of niceTicks(xRange[0], xRange[1], 5)) {
    svgElement("line", {x1: sx(t), x2: sx(t), y1: height - bottom, y2: height - bottom + 4, class: "tick"}, svg);
    svgElement("text", {x: sx(t), y: height - bottom + 15, class: "ticklabel", "text-anchor": "middle"}, svg)
      .textContent = formatTick(t);
  }
  for (const t of niceTicks(yRange[0], yRange[1], 4)) {
    svgElement("line", {x1: left - 4, x2: left, y1: sy(t), y2: sy(t), class: "tick"}, svg);
    svgElement("line", {x1: left, x2: width - right, y1: sy(t), y2: sy(t), class: "grid"}, svg);
    svgElement("text", {x: left - 6, y: sy(t) + 3, class: "ticklabel", "text-anchor": "end"}, svg)
      .textContent = formatTick(t);
  }
  svgElement("text", {x: (left + width - right) / 2, y: height - 4, class: "axislabel",
                      "text-anchor": "middle"}, svg).textContent = xLabel;
  svgElement("text", {x: 12, y: (top + height - bottom) / 2, class: "axislabel", "text-anchor": "middle",
                      transform: `rotate(-90 12 ${(top + height - bottom) / 2})`}, svg).textContent = yLabel;
  svgElement("text", {x: left, y: 14, class: "title"}, svg).textContent = title;
  return {sx, sy};
}

// points: [{x, y, rejected, id, tip}]; thresholds: [{value, label}]
function scatterPlot(svg, spec) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${PLOT.width} ${PLOT.height}`);
  const points = spec.points.filter(p => p.y !== null && Number.isFinite(p.y) && Number.isFinite(p.x));
  const limits = (spec.thresholds || []).map(t => t.value);
  const xRange = extent(points.map(p => p.x));
  const yRange = extent(points.map(p => p.y), limits);
  const {sx, sy} = axes(svg, xRange, yRange, spec.xLabel, spec.yLabel, spec.title);
  for (const t of spec.thresholds || []) {
    svgElement("line", {x1: PLOT.left, x2: PLOT.width - PLOT.right, y1: sy(t.value), y2: sy(t.value),
                        class: "threshold", "data-value": t.value}, svg);
    svgElement("text", {x: PLOT.width - PLOT.right - 2, y: sy(t.value) - 3, class: "thresholdlabel",
                        "text-anchor": "end"}, svg).textContent = t.label;
  }
  for (const p of points) {
    const dot = svgElement("circle", {cx: sx(p.x), cy: sy(p.y), r: 3.2,
                                      class: "point" + (p.rejected ? " rejected" : "") +
                                             (p.id === spec.highlight ? " current" : ""),
                                      "data-id": p.id}, svg);
    svgElement("title", {}, dot).textContent = p.tip;
    if (spec.onClick) dot.addEventListener("click", () => spec.onClick(p.id));
  }
  svg.dataset.points = String(points.length);
}

// curves: [{xs, ys, label, cls}]; guides: [{value, label}] horizontal lines
function linePlot(svg, spec) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${PLOT.width} ${PLOT.height}`);
  const xs = spec.curves.flatMap(c => c.xs), ys = spec.curves.flatMap(c => c.ys);
  const xRange = spec.xRange || extent(xs), yRange = spec.yRange || extent(ys);
  const {sx, sy} = axes(svg, xRange, yRange, spec.xLabel, spec.yLabel, spec.title);
  for (const g of spec.guides || []) {
    svgElement("line", {x1: PLOT.left, x2: PLOT.width - PLOT.right, y1: sy(g.value), y2: sy(g.value),
                        class: "threshold"}, svg);
    svgElement("text", {x: PLOT.width - PLOT.right - 2, y: sy(g.value) - 3, class: "thresholdlabel",
                        "text-anchor": "end"}, svg).textContent = g.label;
  }
  for (const c of spec.curves) {
    const path = c.xs.map((x, i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(c.ys[i]).toFixed(1)}`).join("");
    svgElement("path", {d: path, class: "curve " + (c.cls || "")}, svg);
  }
}

window.vitrifyPlots = {scatterPlot, linePlot};
})();
