// The SessionDB admin console (docs/console.md). Plain JavaScript, no build
// step. Every data call goes to /console/api/* or /v1/admin/* with the admin
// token as `Authorization: Bearer <token>`; the token lives in
// sessionStorage and never in a URL.
"use strict";

(() => {
  const TOKEN_STORAGE_KEY = "sessiondb.adminToken";
  const STATUS_POLL_MS = 1000;
  const EXPERIMENT_POLL_MS = 2000;
  const PROJECTS_POLL_MS = 5000;
  // Client-side ring buffer of /status samples: 10 minutes at 1 s.
  const STATUS_SAMPLES_MAX = 600;
  // Most points asked of /timeseries; coarser intervals beyond that.
  const SERIES_POINTS_MAX = 240;
  // A node is shown unhealthy when its last good answer is older than this.
  const HEALTH_STALE_MS = 5000;

  const $ = (selector) => document.querySelector(selector);

  // --- Token and API ------------------------------------------------------

  let token = sessionStorage.getItem(TOKEN_STORAGE_KEY);

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function request(method, path, candidateToken) {
    const headers = {};
    const used = candidateToken === undefined ? token : candidateToken;
    if (used) headers.Authorization = `Bearer ${used}`;
    const response = await fetch(path, { method, headers, cache: "no-store" });
    const text = await response.text();
    let body = null;
    try { body = JSON.parse(text); } catch (_) { body = null; }
    if (!response.ok) {
      const code = body && body.error ? body.error : `http_${response.status}`;
      const message = body && body.message ? body.message : text;
      throw new ApiError(response.status, code, message);
    }
    return body;
  }

  // A data call; a 401 means the token stopped working: back to login.
  async function api(path, method) {
    try {
      return await request(method || "GET", path);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        logout("The node refused the token (401). Log in again.");
      }
      throw error;
    }
  }

  // --- Views and routing --------------------------------------------------

  const VIEWS = ["login", "overview", "projects", "experiment"];
  let stopView = () => {};

  function show(view) {
    for (const name of VIEWS) {
      $(`#${name}-view`).hidden = name !== view;
    }
    document.body.dataset.view = view;
    const loggedIn = view !== "login";
    $("#nav").hidden = !loggedIn;
    $("#logout").hidden = !loggedIn;
    $("#connection").hidden = !loggedIn;
    for (const link of document.querySelectorAll("[data-nav]")) {
      link.classList.toggle("active", link.dataset.nav === view || (view === "experiment" && link.dataset.nav === "projects"));
    }
  }

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter((p) => p !== "").map(decodeURIComponent);
    if (parts[0] === "projects" && parts.length === 1) return { view: "projects" };
    if (parts[0] === "experiments" && parts.length === 3) {
      return { view: "experiment", project: parts[1], experiment: parts[2] };
    }
    return { view: "overview" };
  }

  function route() {
    stopView();
    stopView = () => {};
    if (!token) {
      show("login");
      return;
    }
    const target = parseRoute();
    show(target.view);
    if (target.view === "overview") stopView = startOverview();
    if (target.view === "projects") stopView = startProjects();
    if (target.view === "experiment") stopView = startExperiment(target.project, target.experiment);
  }

  // Runs `step` now and then every `intervalMs` after each one finishes;
  // returns a function that stops it.
  function poll(step, intervalMs) {
    let stopped = false;
    let timer = null;
    const run = async () => {
      if (stopped) return;
      try { await step(); } catch (_) { /* shown by the step */ }
      if (!stopped) timer = setTimeout(run, intervalMs);
    };
    run();
    return () => { stopped = true; clearTimeout(timer); };
  }

  // --- Login ----------------------------------------------------------------

  function logout(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_STORAGE_KEY);
    stopStatus();
    const error = $("#login-error");
    error.hidden = !message;
    error.textContent = message || "";
    route();
  }

  async function login(event) {
    event.preventDefault();
    const candidate = $("#token").value.trim();
    const error = $("#login-error");
    error.hidden = true;
    try {
      await request("GET", "/console/api/status", candidate);
    } catch (failure) {
      error.hidden = false;
      error.textContent = failure.status === 401
        ? "That token was refused (401 unauthorized)."
        : failure.status === 403
          ? "That is not the admin token (403 forbidden): an ingest key cannot open the console."
          : `Could not reach the node: ${failure.message}`;
      document.body.dataset.loginRefusals = String(Number(document.body.dataset.loginRefusals || 0) + 1);
      return;
    }
    token = candidate;
    sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
    $("#token").value = "";
    startStatus();
    route();
  }

  // --- Status ring buffer -----------------------------------------------------

  const samples = [];
  let lastStatus = null;
  let lastStatusAtMs = 0;
  let stopStatus = () => {};
  const statusListeners = new Set();

  function startStatus() {
    stopStatus();
    stopStatus = poll(async () => {
      try {
        const status = await api("/console/api/status");
        lastStatus = status;
        lastStatusAtMs = Date.now();
        samples.push({ atMs: lastStatusAtMs, status });
        if (samples.length > STATUS_SAMPLES_MAX) samples.splice(0, samples.length - STATUS_SAMPLES_MAX);
        $("#connection").textContent = `live · node ${status.node_id}`;
        $("#connection").classList.remove("down");
      } catch (error) {
        $("#connection").textContent = `unreachable: ${error.message}`;
        $("#connection").classList.add("down");
      }
      for (const listener of statusListeners) listener();
    }, STATUS_POLL_MS);
  }

  // Per-second rate of a counter between consecutive samples.
  function rateSeries(counter) {
    const points = [];
    for (let i = 1; i < samples.length; i += 1) {
      const seconds = (samples[i].atMs - samples[i - 1].atMs) / 1000;
      if (seconds <= 0) continue;
      const delta = samples[i].status[counter] - samples[i - 1].status[counter];
      points.push([samples[i].atMs, Math.max(0, delta) / seconds]);
    }
    return points;
  }

  function gaugeSeries(field) {
    return samples.map((sample) => [sample.atMs, sample.status[field]]);
  }

  // --- Cluster overview ---------------------------------------------------------

  // The cluster as the console draws it. Single node today: one node, the
  // owner of every shard, no Raft. The cluster issue replaces this with the
  // placement state (nodes, owners per shard, moves, leader and term).
  function clusterOf(status) {
    return {
      nodes: [{
        id: status.node_id,
        address: location.host,
        role: "single node",
        raft: "single node",
        status,
      }],
      shardOwners: Array.from({ length: status.shards }, () => status.node_id),
      moves: [],
    };
  }

  function clockLabel(ms) {
    return new Date(ms).toISOString().slice(11, 19);
  }

  function renderOverview() {
    if (!lastStatus) return;
    const cluster = clusterOf(lastStatus);
    const healthy = Date.now() - lastStatusAtMs < HEALTH_STALE_MS;
    const body = $("#nodes-table tbody");
    body.replaceChildren(...cluster.nodes.map((node) => {
      const row = document.createElement("tr");
      row.dataset.nodeId = String(node.id);
      const cells = [
        ["node", node.id], ["address", node.address], ["role", node.role], ["raft", node.raft],
        ["health", healthy ? "ok" : "unreachable"], ["shards", cluster.shardOwners.filter((o) => o === node.id).length],
        ["projects", node.status.projects], ["live_visitors", node.status.live_visitors],
        ["retained_events", node.status.retained_events], ["events_accepted", node.status.events_accepted],
        ["events_duplicate", node.status.events_duplicate], ["events_rejected", node.status.events_rejected],
        ["version", node.status.version],
      ];
      for (const [field, value] of cells) {
        const cell = document.createElement("td");
        cell.dataset.field = field;
        cell.textContent = String(value);
        if (field === "health") cell.className = healthy ? "ok" : "bad";
        row.appendChild(cell);
      }
      return row;
    }));

    const owners = [...new Set(cluster.shardOwners)];
    const grid = $("#shard-grid");
    if (grid.childElementCount !== cluster.shardOwners.length) {
      grid.replaceChildren(...cluster.shardOwners.map(() => document.createElement("div")));
    }
    cluster.shardOwners.forEach((owner, shard) => {
      const cell = grid.children[shard];
      cell.className = "shard";
      cell.dataset.owner = String(owner);
      cell.title = `shard ${shard} → node ${owner}`;
      cell.style.background = Charts.colour(owners.indexOf(owner));
    });
    $("#shard-summary").textContent = `${cluster.shardOwners.length} shards · ${owners.length} owner${owners.length === 1 ? "" : "s"} · ${cluster.moves.length} moves in progress`;
    $("#shard-legend").replaceChildren(...owners.map((owner, index) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = Charts.colour(index);
      item.append(swatch, `node ${owner}`);
      return item;
    }));

    Charts.line($("#chart-ingest"), [{ name: "accepted/s", points: rateSeries("events_accepted") }], { xLabel: clockLabel });
    Charts.line($("#chart-rejected"), [{ name: "rejected/s", points: rateSeries("events_rejected") }], { xLabel: clockLabel });
    Charts.line($("#chart-duplicates"), [{ name: "duplicates/s", points: rateSeries("events_duplicate") }], { xLabel: clockLabel });
    Charts.line($("#chart-active"), [
      { name: "live visitors", points: gaugeSeries("live_visitors") },
      { name: "retained events", points: gaugeSeries("retained_events") },
    ], { xLabel: clockLabel });
    document.body.dataset.statusSamples = String(samples.length);
  }

  function startOverview() {
    statusListeners.add(renderOverview);
    renderOverview();
    return () => statusListeners.delete(renderOverview);
  }

  // --- Operations ---------------------------------------------------------------

  function confirmAction(title, text) {
    const dialog = $("#confirm-dialog");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  function resultLine(label, value) {
    const row = document.createElement("div");
    const name = document.createElement("span");
    name.textContent = label;
    const strong = document.createElement("strong");
    strong.textContent = String(value);
    strong.dataset.field = label;
    row.append(name, strong);
    return row;
  }

  async function checkpoint() {
    const confirmed = await confirmAction(
      "Take a checkpoint now?",
      "The node copies its state (ingest pauses briefly), writes it to disk and deletes the log segments the checkpoint covers.",
    );
    const result = $("#op-result");
    if (!confirmed) {
      result.dataset.state = "cancelled";
      result.textContent = "Checkpoint cancelled.";
      return;
    }
    const button = $("#op-checkpoint");
    button.disabled = true;
    const startedMs = Date.now();
    result.dataset.state = "running";
    const progress = document.createElement("progress");
    const label = document.createElement("span");
    result.replaceChildren(progress, label);
    const ticker = setInterval(() => {
      label.textContent = ` checkpoint running… ${((Date.now() - startedMs) / 1000).toFixed(1)} s`;
    }, 100);
    try {
      const answer = await api("/v1/admin/checkpoint", "POST");
      result.dataset.state = "done";
      const heading = document.createElement("p");
      heading.className = "ok";
      heading.textContent = `Checkpoint written at ${clockLabel(Date.now())}.`;
      result.replaceChildren(heading,
        resultLine("position", answer.position), resultLine("visitors", answer.visitors),
        resultLine("bytes", answer.bytes), resultLine("pause_ms", answer.pause_ms),
        resultLine("duration_ms", answer.duration_ms), resultLine("log_segments_removed", answer.log_segments_removed));
    } catch (error) {
      result.dataset.state = "failed";
      const failure = document.createElement("p");
      failure.className = "error";
      failure.textContent = `Checkpoint failed: ${error.code}: ${error.message}`;
      result.replaceChildren(failure);
    } finally {
      clearInterval(ticker);
      button.disabled = false;
    }
  }

  // --- Projects -------------------------------------------------------------------

  function formatDuration(ms) {
    if (ms % 86400000 === 0) return `${ms / 86400000} d`;
    if (ms % 3600000 === 0) return `${ms / 3600000} h`;
    if (ms % 60000 === 0) return `${ms / 60000} min`;
    if (ms >= 1000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.round(ms)} ms`;
  }

  function experimentHref(project, experiment) {
    return `#/experiments/${encodeURIComponent(project)}/${encodeURIComponent(experiment)}`;
  }

  function renderProjects(list) {
    const container = $("#projects-list");
    if (list.projects.length === 0) {
      container.textContent = "No projects yet. Create one with POST /v1/projects or sessiondb-ctl.";
      return;
    }
    container.replaceChildren(...list.projects.map((project) => {
      const card = document.createElement("div");
      card.className = "card project";
      card.dataset.project = project.name;
      const title = document.createElement("h2");
      title.textContent = project.name;
      const settings = document.createElement("p");
      settings.className = "muted";
      const s = project.settings;
      settings.textContent = `bucket ${formatDuration(s.bucket_ms)} · session gap ${formatDuration(s.session_gap_ms)} · `
        + `time zone ${s.time_zone} · retention ${formatDuration(s.retention_ms)} · breakdowns: ${s.breakdown_attributes.join(", ") || "none"}`;
      const experiments = document.createElement("ul");
      experiments.className = "experiments";
      if (project.experiments.length === 0) {
        const none = document.createElement("li");
        none.className = "muted";
        none.textContent = "no experiments yet (an experiment appears with its first decision)";
        experiments.appendChild(none);
      }
      for (const experiment of project.experiments) {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = experimentHref(project.name, experiment);
        link.textContent = experiment;
        link.dataset.experiment = experiment;
        item.appendChild(link);
        experiments.appendChild(item);
      }
      card.append(title, settings, experiments);
      return card;
    }));
  }

  function startProjects() {
    return poll(async () => renderProjects(await api("/console/api/projects")), PROJECTS_POLL_MS);
  }

  // --- Experiment -------------------------------------------------------------------

  const integer = (n) => String(n);
  const percent = (x) => `${(x * 100).toFixed(2)}%`;
  const signedPercent = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(2)}%`;
  const fixed = (digits) => (x) => x.toFixed(digits);
  const pValue = (p) => (p < 0.0001 ? "<0.0001" : p.toFixed(4));

  // A table cell carrying its metric name and exact value for readers
  // (and the browser tests) next to the formatted text.
  function metricCell(metric, value, format) {
    const cell = document.createElement("td");
    cell.dataset.metric = metric;
    cell.dataset.value = String(value);
    cell.textContent = format(value);
    cell.className = "num";
    return cell;
  }

  function textCell(text, className) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (className) cell.className = className;
    return cell;
  }

  function headerRow(names) {
    const head = document.createElement("thead");
    const row = document.createElement("tr");
    for (const name of names) {
      const th = document.createElement("th");
      th.textContent = name;
      row.appendChild(th);
    }
    head.appendChild(row);
    return head;
  }

  function toneOf(comparison) {
    if (comparison.ci_low > 0) return "better";
    if (comparison.ci_high < 0) return "worse";
    return "neutral";
  }

  // Improvement with its 95% CI as text and as an error bar, then the p-value.
  function comparisonCells(prefix, comparison, axis, isBaseline) {
    if (!comparison) {
      return [textCell(isBaseline ? "baseline" : "—", "muted"), textCell("", "muted")];
    }
    const cell = document.createElement("td");
    cell.className = `improvement ${toneOf(comparison)}`;
    cell.dataset.metric = `${prefix}.relative_improvement`;
    cell.dataset.value = String(comparison.relative_improvement);
    cell.dataset.ciLow = String(comparison.ci_low);
    cell.dataset.ciHigh = String(comparison.ci_high);
    const text = document.createElement("span");
    text.textContent = `${signedPercent(comparison.relative_improvement)} [${signedPercent(comparison.ci_low)}, ${signedPercent(comparison.ci_high)}]`;
    cell.append(text, Charts.errorBar(comparison.relative_improvement, comparison.ci_low, comparison.ci_high,
      -axis, axis, { zero: 0, tone: toneOf(comparison) }));
    return [cell, metricCell(`${prefix}.p_value`, comparison.p_value, pValue)];
  }

  function variationRow(variation) {
    const row = document.createElement("tr");
    row.dataset.variation = variation.variation;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = variation.variation;
    row.appendChild(name);
    return row;
  }

  function groupTables(group, results) {
    const card = document.createElement("div");
    card.className = "card group";
    card.dataset.group = group.breakdown_value === undefined || group.breakdown_value === null ? "" : group.breakdown_value;
    const title = document.createElement("h2");
    title.textContent = results.breakdown ? `${results.breakdown} = ${group.breakdown_value}` : "All visitors";
    card.appendChild(title);

    // Visitors, HLL estimate with ± standard error bars, sessions.
    // One axis for the group's estimates, padded around the whiskers, so
    // overlapping error bars are visible as such.
    const lows = group.variations.map((v) => v.active_visitors.value - v.active_visitors.standard_error);
    const highs = group.variations.map((v) => v.active_visitors.value + v.active_visitors.standard_error);
    const activeSpan = Math.max(1, Math.max(...highs) - Math.min(...lows));
    const activeMin = Math.max(0, Math.min(...lows) - activeSpan * 0.5);
    const activeMax = Math.max(...highs) + activeSpan * 0.5;
    const overview = document.createElement("table");
    overview.className = "data";
    overview.appendChild(headerRow(["Variation", "Visitors", "Active visitors (HLL ± SE)", "", "Conflicts",
      "Sessions", "Bounce rate", "Mean duration", "Pageviews / session"]));
    const overviewBody = document.createElement("tbody");
    for (const variation of group.variations) {
      const row = variationRow(variation);
      const estimate = variation.active_visitors;
      const hll = metricCell("active_visitors.value", estimate.value, fixed(1));
      hll.dataset.standardError = String(estimate.standard_error);
      hll.textContent = `${estimate.value.toFixed(1)} ± ${estimate.standard_error.toFixed(1)}`;
      const bar = document.createElement("td");
      bar.appendChild(Charts.errorBar(estimate.value, estimate.value - estimate.standard_error,
        estimate.value + estimate.standard_error, activeMin, activeMax));
      row.append(
        metricCell("visitors", variation.visitors, integer), hll, bar,
        metricCell("conflicts", variation.conflicts, integer),
        metricCell("sessions.sessions", variation.sessions.sessions, integer),
        metricCell("sessions.bounce_rate", variation.sessions.bounce_rate, percent),
        metricCell("sessions.duration_ms_mean", variation.sessions.duration_ms_mean, (ms) => `${(ms / 1000).toFixed(1)} s`),
        metricCell("sessions.pageviews_per_session", variation.sessions.pageviews_per_session, fixed(2)),
      );
      overviewBody.appendChild(row);
    }
    overview.appendChild(overviewBody);
    card.appendChild(overview);

    results.keys.forEach((key, keyIndex) => {
      const heading = document.createElement("h3");
      heading.textContent = `Conversion key: ${key}`;
      const table = document.createElement("table");
      table.className = "data";
      table.dataset.key = key;
      table.appendChild(headerRow(["Variation", "Unique", "Total", "Conversion rate", "Value / visitor",
        "Rate improvement (95% CI)", "p", "Value improvement (95% CI)", "p"]));
      const comparisons = group.variations.flatMap((v) => [v.metrics[keyIndex].rate_comparison, v.metrics[keyIndex].value_comparison]).filter(Boolean);
      const axis = Math.min(10, Math.max(0.1, ...comparisons.map((c) => Math.max(Math.abs(c.ci_low), Math.abs(c.ci_high)))
        .filter(Number.isFinite)));
      const body = document.createElement("tbody");
      for (const variation of group.variations) {
        const metrics = variation.metrics[keyIndex];
        const isBaseline = variation.variation === results.baseline;
        const row = variationRow(variation);
        row.append(
          metricCell("unique_conversions", metrics.unique_conversions, integer),
          metricCell("total_conversions", metrics.total_conversions, integer),
          metricCell("conversion_rate", metrics.conversion_rate, percent),
          metricCell("value_per_visitor", metrics.value_per_visitor, fixed(4)),
          ...comparisonCells("rate_comparison", metrics.rate_comparison, axis, isBaseline),
          ...comparisonCells("value_comparison", metrics.value_comparison, axis, isBaseline),
        );
        body.appendChild(row);
      }
      table.appendChild(body);
      card.append(heading, table);
    });
    return card;
  }

  function utcInput(ms) {
    return new Date(ms).toISOString().slice(0, 16);
  }

  function parseUtcInput(text) {
    return text ? Date.parse(`${text}:00Z`) : NaN;
  }

  function startExperiment(projectName, experimentName) {
    $("#experiment-title").textContent = `${projectName} / ${experimentName}`;
    const query = { breakdown: "", from: null, to: null };
    let project = null;
    let refreshes = 0;
    // Refreshes overlap (poll and user changes); only a newer one may draw.
    let refreshesStarted = 0;
    let refreshDrawn = 0;
    let rangeEdited = false;
    let lastKeys = [];
    const resultsBox = $("#results");
    resultsBox.replaceChildren();
    resultsBox.removeAttribute("data-refreshes");
    const errorBox = $("#experiment-error");
    errorBox.hidden = true;

    const breakdown = $("#breakdown");
    const keySelect = $("#chart-key");
    const fromInput = $("#range-from");
    const toInput = $("#range-to");

    const showError = (error) => {
      errorBox.hidden = false;
      errorBox.textContent = `${error.code || "error"}: ${error.message}`;
    };

    const onBreakdown = () => { query.breakdown = breakdown.value; refresh(); };
    const onRangeEdit = () => { rangeEdited = true; };
    const onApply = (event) => {
      event.preventDefault();
      const bucket = project.settings.bucket_ms;
      const from = parseUtcInput(fromInput.value);
      const to = parseUtcInput(toInput.value);
      if (!Number.isFinite(from) || !Number.isFinite(to)) {
        showError({ code: "invalid_range", message: "enter both ends of the range" });
        return;
      }
      // Align to the project's buckets: the start down, the end up.
      query.from = Math.floor(from / bucket) * bucket;
      query.to = Math.ceil(to / bucket) * bucket;
      if (query.to <= query.from) query.to = query.from + bucket;
      fromInput.value = utcInput(query.from);
      toInput.value = utcInput(query.to);
      rangeEdited = false;
      refresh();
    };
    const onReset = () => { query.from = null; query.to = null; rangeEdited = false; refresh(); };
    const onKey = () => refresh();

    breakdown.addEventListener("change", onBreakdown);
    keySelect.addEventListener("change", onKey);
    fromInput.addEventListener("input", onRangeEdit);
    toInput.addEventListener("input", onRangeEdit);
    $("#query-form").addEventListener("submit", onApply);
    $("#range-reset").addEventListener("click", onReset);

    async function loadProject() {
      project = await api(`/console/api/projects/${encodeURIComponent(projectName)}`);
      breakdown.replaceChildren(new Option("(no breakdown)", ""),
        ...project.settings.breakdown_attributes.map((name) => new Option(name, name)));
      breakdown.value = query.breakdown;
    }

    function resultsPath() {
      const params = new URLSearchParams();
      if (query.from !== null) { params.set("from", query.from); params.set("to", query.to); }
      if (query.breakdown) params.set("breakdown", query.breakdown);
      const base = `/console/api/projects/${encodeURIComponent(projectName)}/experiments/${encodeURIComponent(experimentName)}`;
      return { base, params };
    }

    function renderKeys(keys) {
      if (keys.join(",") === lastKeys.join(",")) return;
      const selected = keySelect.value;
      keySelect.replaceChildren(...keys.map((key) => new Option(key, key)));
      if (keys.includes(selected)) keySelect.value = selected;
      lastKeys = keys;
    }

    function renderSeries(series, results) {
      const bucketLabel = (ms) => new Date(ms).toISOString().slice(5, 16).replace("T", " ");
      const keyIndex = Math.max(0, series.keys.indexOf(keySelect.value));
      const pick = (f) => series.variations.map((v) => ({ name: v.variation, points: v.points.map((p) => [p.ts, f(p)]) }));
      Charts.line($("#chart-visitors"), pick((p) => p.visitors), { xLabel: bucketLabel });
      Charts.line($("#chart-sessions"), pick((p) => p.sessions), { xLabel: bucketLabel });
      Charts.line($("#chart-series-active"), pick((p) => p.active_visitors), { xLabel: bucketLabel });
      Charts.line($("#chart-conversions"), series.keys.length === 0 ? [] : pick((p) => p.unique_conversions[keyIndex]), { xLabel: bucketLabel });
      $("#chart-key-label").textContent = series.keys.length === 0 ? "(no conversions yet)" : `key ${series.keys[keyIndex]}`;
      resultsBox.dataset.seriesPoints = String(series.variations.reduce((n, v) => n + v.points.length, 0));
      void results;
    }

    async function refresh() {
      if (!project) await loadProject();
      refreshesStarted += 1;
      const sequence = refreshesStarted;
      const { base, params } = resultsPath();
      const results = await api(`${base}/results?${params}`);
      const bucket = project.settings.bucket_ms;
      const buckets = Math.max(1, Math.ceil((results.to - results.from) / bucket));
      const interval = Math.ceil(buckets / SERIES_POINTS_MAX) * bucket;
      const seriesParams = new URLSearchParams({ from: results.from, to: results.to, interval_ms: interval });
      if (results.keys.length > 0) seriesParams.set("keys", results.keys.join(","));
      const series = await api(`${base}/timeseries?${seriesParams}`);
      if (sequence < refreshDrawn) return;
      refreshDrawn = sequence;
      errorBox.hidden = true;

      refreshes += 1;
      resultsBox.dataset.from = String(results.from);
      resultsBox.dataset.to = String(results.to);
      resultsBox.dataset.breakdown = results.breakdown || "";
      resultsBox.dataset.baseline = results.baseline || "";
      resultsBox.dataset.keys = results.keys.join(",");
      resultsBox.replaceChildren(...results.groups.map((group) => groupTables(group, results)));
      resultsBox.dataset.refreshes = String(refreshes);
      if (query.from === null && !rangeEdited && document.activeElement !== fromInput && document.activeElement !== toInput) {
        fromInput.value = utcInput(results.from);
        toInput.value = utcInput(results.to);
      }
      $("#range-shown").textContent = `showing ${utcInput(results.from).replace("T", " ")} → ${utcInput(results.to).replace("T", " ")} UTC`
        + ` · bucket ${formatDuration(bucket)}${query.from === null ? " · all data" : ""}`;
      renderKeys(results.keys);
      renderSeries(series, results);
    }

    const stopPolling = poll(async () => {
      try { await refresh(); } catch (error) { showError(error); }
    }, EXPERIMENT_POLL_MS);

    return () => {
      stopPolling();
      breakdown.removeEventListener("change", onBreakdown);
      keySelect.removeEventListener("change", onKey);
      fromInput.removeEventListener("input", onRangeEdit);
      toInput.removeEventListener("input", onRangeEdit);
      $("#query-form").removeEventListener("submit", onApply);
      $("#range-reset").removeEventListener("click", onReset);
    };
  }

  // --- Start ------------------------------------------------------------------------

  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout(""));
  $("#op-checkpoint").addEventListener("click", checkpoint);
  window.addEventListener("hashchange", route);

  (async () => {
    if (token) {
      try {
        await request("GET", "/console/api/status", token);
        startStatus();
      } catch (_) {
        logout("The stored token no longer works. Log in again.");
        return;
      }
    }
    route();
  })();
})();
