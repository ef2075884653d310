// Small hand-written SVG charts for the SessionDB console: line charts and
// horizontal error bars. No library, no network.
"use strict";

const Charts = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  // Colour per series index; owners and variations use the same palette.
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  const WIDTH = 480;
  const HEIGHT = 180;
  const MARGIN = { left: 52, right: 10, top: 10, bottom: 24 };

  function element(name, attributes, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes || {})) {
      node.setAttribute(key, String(value));
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function colour(index) {
    return PALETTE[index % PALETTE.length];
  }

  // A compact label: 1234 → "1.2k".
  function shortNumber(value) {
    const magnitude = Math.abs(value);
    if (magnitude >= 1e9) return (value / 1e9).toFixed(1) + "G";
    if (magnitude >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (magnitude >= 1e4) return (value / 1e3).toFixed(0) + "k";
    if (magnitude >= 1e3) return (value / 1e3).toFixed(1) + "k";
    if (magnitude >= 10 || value === 0) return value.toFixed(0);
    return value.toFixed(2);
  }

  // Draws series = [{name, points: [[x, y], ...]}] into an <svg>, replacing
  // what was there. xLabel formats the x axis ends.
  function line(svg, series, options) {
    const opts = options || {};
    const xLabel = opts.xLabel || ((x) => String(x));
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute("preserveAspectRatio", "none");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const all = series.flatMap((s) => s.points);
    const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    svg.appendChild(element("rect", {
      x: MARGIN.left, y: MARGIN.top, width: plotWidth, height: plotHeight, class: "plot-area",
    }));
    if (all.length === 0) {
      svg.appendChild(element("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "axis" }, "no data yet"));
      svg.dataset.points = "0";
      return;
    }
    let xMin = Math.min(...all.map((p) => p[0]));
    let xMax = Math.max(...all.map((p) => p[0]));
    if (xMax === xMin) { xMin -= 1; xMax += 1; }
    // An all-zero chart gets a 0–1 axis rather than a degenerate one.
    const top = Math.max(...all.map((p) => p[1]));
    const yMax = (top > 0 ? top : 1) * 1.1;
    const x = (value) => MARGIN.left + ((value - xMin) / (xMax - xMin)) * plotWidth;
    const y = (value) => MARGIN.top + plotHeight - (value / yMax) * plotHeight;
    for (const fraction of [0, 0.5, 1]) {
      const value = yMax * fraction;
      svg.appendChild(element("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value), class: "gridline" }));
      svg.appendChild(element("text", { x: MARGIN.left - 4, y: y(value) + 4, "text-anchor": "end", class: "axis" }, shortNumber(value)));
    }
    svg.appendChild(element("text", { x: MARGIN.left, y: HEIGHT - 6, class: "axis" }, xLabel(xMin)));
    svg.appendChild(element("text", { x: WIDTH - MARGIN.right, y: HEIGHT - 6, "text-anchor": "end", class: "axis" }, xLabel(xMax)));
    series.forEach((s, index) => {
      if (s.points.length === 0) return;
      const path = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      svg.appendChild(element("polyline", { points: path, fill: "none", stroke: colour(index), "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
      if (s.points.length === 1) {
        const [px, py] = s.points[0];
        svg.appendChild(element("circle", { cx: x(px), cy: y(py), r: 3, fill: colour(index) }));
      }
      svg.appendChild(element("text", { x: MARGIN.left + 6 + index * 90, y: MARGIN.top + 12, fill: colour(index), class: "legend-text" }, s.name));
    });
    svg.dataset.points = String(all.length);
  }

  // A horizontal error bar: a dot at `value`, whiskers from low to high,
  // on an axis from axisMin to axisMax. `zero` draws a reference line
  // (for improvements). Returns the <svg>.
  function errorBar(value, low, high, axisMin, axisMax, options) {
    const opts = options || {};
    const width = 96;
    const height = 18;
    const svg = element("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "error-bar" });
    const span = axisMax - axisMin || 1;
    const clamp = (v) => Math.max(axisMin, Math.min(axisMax, v));
    const x = (v) => 4 + ((clamp(v) - axisMin) / span) * (width - 8);
    if (opts.zero !== undefined) {
      svg.appendChild(element("line", { x1: x(opts.zero), x2: x(opts.zero), y1: 1, y2: height - 1, class: "zero" }));
    }
    const tone = opts.tone || "neutral";
    svg.appendChild(element("line", { x1: x(low), x2: x(high), y1: height / 2, y2: height / 2, class: `whisker ${tone}` }));
    for (const end of [low, high]) {
      svg.appendChild(element("line", { x1: x(end), x2: x(end), y1: 4, y2: height - 4, class: `whisker ${tone}` }));
    }
    svg.appendChild(element("circle", { cx: x(value), cy: height / 2, r: 3, class: `dot ${tone}` }));
    return svg;
  }

  return { line, errorBar, colour, shortNumber };
})();
