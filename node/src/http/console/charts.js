// Small hand-written SVG charts for the SessionDB console: line charts and
// horizontal error bars. No library, no network.
"use strict";

const Charts = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  // Colour per series index; owners and variations use the same palette.
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  const WIDTH = 480;
  const HEIGHT = 220;
  const MARGIN = { left: 62, right: 14, top: 10, bottom: 40 };
  // Ticks per axis (intervals; one more label each).
  const X_TICKS = 4;
  const Y_TICKS = 4;

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
  // what was there. Options:
  //   xLabel(x)   formats an x tick, yFormat(y) a y tick and a tooltip value
  //   xTitle, yTitle   the axis titles (with units)
  //   partialFrom  x from which the data is still incomplete (the bucket in
  //                progress): drawn dashed and labelled "partial"
  //   bands       a series may carry band: [[x, low, high], ...], drawn as a
  //               shaded area in its colour under its line (a confidence
  //               sequence); with negative values the y axis goes below 0
  //   zeroLine    draws a reference line at y = 0
  //   tooltip(s, point)  a point's tooltip text instead of the default
  // A series' colourIndex (default: its index) picks its colour, so a
  // variation keeps its colour in a chart that leaves the baseline out.
  // The SVG keeps its aspect ratio (no stretching); every point carries a
  // <title> with its exact value, shown on hover.
  function line(svg, series, options) {
    const opts = options || {};
    const xLabel = opts.xLabel || ((x) => String(x));
    const yFormat = opts.yFormat || shortNumber;
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.removeAttribute("preserveAspectRatio");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const all = series.flatMap((s) => s.points);
    const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    svg.appendChild(element("rect", {
      x: MARGIN.left, y: MARGIN.top, width: plotWidth, height: plotHeight, class: "plot-area",
    }));
    if (opts.yTitle) {
      svg.appendChild(element("text", { x: 12, y: MARGIN.top + plotHeight / 2, "text-anchor": "middle", class: "axis-title",
        transform: `rotate(-90 12 ${MARGIN.top + plotHeight / 2})` }, opts.yTitle));
    }
    if (opts.xTitle) {
      svg.appendChild(element("text", { x: MARGIN.left + plotWidth / 2, y: HEIGHT - 4, "text-anchor": "middle", class: "axis-title" }, opts.xTitle));
    }
    if (all.length === 0) {
      svg.appendChild(element("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "axis" }, "no data yet"));
      svg.dataset.points = "0";
      return;
    }
    let xMin = Math.min(...all.map((p) => p[0]));
    let xMax = Math.max(...all.map((p) => p[0]));
    if (xMax === xMin) { xMin -= 1; xMax += 1; }
    // An all-zero chart gets a 0–1 axis rather than a degenerate one.
    const bandValues = series.flatMap((s) => (s.band || []).flatMap((b) => [b[1], b[2]]));
    const top = Math.max(...all.map((p) => p[1]), ...bandValues);
    const bottom = Math.min(0, ...all.map((p) => p[1]), ...bandValues);
    let yMax = (top > 0 ? top : 1) * 1.1;
    // Counts get whole-number ticks; a share never goes above 100 %.
    if (opts.integer) yMax = Math.max(Y_TICKS, Math.ceil(yMax / Y_TICKS) * Y_TICKS);
    if (opts.yMaxLimit !== undefined) yMax = Math.min(yMax, opts.yMaxLimit);
    let yMin = bottom < 0 ? bottom * 1.1 : 0;
    if (opts.yMinLimit !== undefined) yMin = Math.max(yMin, opts.yMinLimit);
    const x = (value) => MARGIN.left + ((value - xMin) / (xMax - xMin)) * plotWidth;
    const clampY = (value) => Math.max(yMin, Math.min(yMax, value));
    const y = (value) => MARGIN.top + plotHeight - ((clampY(value) - yMin) / (yMax - yMin)) * plotHeight;
    for (let tick = 0; tick <= Y_TICKS; tick += 1) {
      const value = yMin + ((yMax - yMin) * tick) / Y_TICKS;
      svg.appendChild(element("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value), class: "gridline" }));
      svg.appendChild(element("text", { x: MARGIN.left - 4, y: y(value) + 4, "text-anchor": "end", class: "axis" }, yFormat(value)));
    }
    for (let tick = 0; tick <= X_TICKS; tick += 1) {
      const value = xMin + ((xMax - xMin) * tick) / X_TICKS;
      const anchor = tick === 0 ? "start" : tick === X_TICKS ? "end" : "middle";
      svg.appendChild(element("line", { x1: x(value), x2: x(value), y1: MARGIN.top + plotHeight, y2: MARGIN.top + plotHeight + 4, class: "gridline" }));
      svg.appendChild(element("text", { x: x(value), y: MARGIN.top + plotHeight + 16, "text-anchor": anchor, class: "axis" }, xLabel(value)));
    }
    const partialFrom = opts.partialFrom;
    if (partialFrom !== undefined && partialFrom !== null && partialFrom <= xMax) {
      const left = Math.max(MARGIN.left, x(partialFrom));
      svg.appendChild(element("rect", { x: left, y: MARGIN.top, width: Math.max(4, MARGIN.left + plotWidth - left), height: plotHeight, class: "partial-area" }));
      svg.appendChild(element("text", { x: MARGIN.left + plotWidth - 4, y: MARGIN.top + plotHeight - 6, "text-anchor": "end", class: "axis partial-label" }, "partial"));
      svg.dataset.partialFrom = String(partialFrom);
    } else {
      delete svg.dataset.partialFrom;
    }
    if (opts.zeroLine && yMin < 0) {
      svg.appendChild(element("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(0), y2: y(0), class: "zero-line" }));
    }
    // Bands first, so every line is drawn over every band.
    series.forEach((s, index) => {
      if (!s.band || s.band.length === 0) return;
      const upper = s.band.map((b) => `${x(b[0]).toFixed(1)},${y(b[2]).toFixed(1)}`);
      const lower = [...s.band].reverse().map((b) => `${x(b[0]).toFixed(1)},${y(b[1]).toFixed(1)}`);
      const single = s.band.length === 1;
      svg.appendChild(single
        ? element("line", { x1: x(s.band[0][0]), x2: x(s.band[0][0]), y1: y(s.band[0][1]), y2: y(s.band[0][2]),
          stroke: colour(s.colourIndex !== undefined ? s.colourIndex : index), "stroke-width": 6, "stroke-opacity": 0.25, class: "band", "data-series": s.name })
        : element("polygon", { points: [...upper, ...lower].join(" "), fill: colour(s.colourIndex !== undefined ? s.colourIndex : index), "fill-opacity": 0.15,
          stroke: "none", class: "band", "data-series": s.name, "data-points": s.band.length }));
    });
    series.forEach((s, index) => {
      if (s.points.length === 0) return;
      const complete = s.points.filter((p) => partialFrom === undefined || partialFrom === null || p[0] < partialFrom);
      const partial = s.points.filter((p) => !complete.includes(p));
      const polyline = (points, dashed) => element("polyline", {
        points: points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
        fill: "none", stroke: colour(s.colourIndex !== undefined ? s.colourIndex : index), "stroke-width": 2, class: dashed ? "series partial" : "series",
        "data-series": s.name,
      });
      if (complete.length > 0) svg.appendChild(polyline(complete, false));
      if (partial.length > 0) {
        // Joined to the last complete point, dashed.
        svg.appendChild(polyline(complete.length > 0 ? [complete[complete.length - 1], ...partial] : partial, true));
      }
      // A marker per point (so equal lines stay visible, the second one
      // hollow) with the exact value as its tooltip.
      for (const point of opts.markers === false ? [] : s.points) {
        const marker = element("circle", { cx: x(point[0]), cy: y(point[1]), r: 3, fill: index === 0 ? colour(s.colourIndex !== undefined ? s.colourIndex : index) : "#fff",
          stroke: colour(s.colourIndex !== undefined ? s.colourIndex : index), "stroke-width": 1.5, class: "point", "data-series": s.name, "data-x": point[0], "data-y": point[1] });
        const partialNote = partialFrom !== undefined && partialFrom !== null && point[0] >= partialFrom ? " (partial)" : "";
        const text = opts.tooltip
          ? `${s.name} · ${xLabel(point[0])}${partialNote}: ${opts.tooltip(s, point)}`
          : `${s.name} · ${xLabel(point[0])}${partialNote}: ${(opts.tooltipFormat || yFormat)(point[1])}`;
        marker.appendChild(element("title", {}, text));
        svg.appendChild(marker);
      }
      svg.appendChild(element("text", { x: MARGIN.left + 6 + index * 110, y: MARGIN.top + 12, fill: colour(s.colourIndex !== undefined ? s.colourIndex : index), class: "legend-text" }, s.name));
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
