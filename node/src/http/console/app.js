// The SessionDB admin console (docs/console.md). Plain JavaScript, no build
// step. Every data call goes to /console/api/* or /v1/admin/* with the admin
// token as `Authorization: Bearer <token>`; the token lives in
// sessionStorage and never in a URL.
"use strict";

(() => {
  const TOKEN_STORAGE_KEY = "sessiondb.adminToken";
  // The cluster and members poll behind the overview, its charts and the
  // projects' event rates.
  const SAMPLE_POLL_MS = 1000;
  const EXPERIMENT_POLL_MS = 2000;
  const PROJECTS_POLL_MS = 5000;
  // Client-side ring buffer of samples: 10 minutes at 1 s.
  const SAMPLES_MAX = 600;
  // A project's events/s is averaged over the samples of this window.
  const RATE_WINDOW_MS = 10000;
  // Most points asked of /timeseries; coarser intervals beyond that.
  const SERIES_POINTS_MAX = 240;
  // Columns of the shard grid, whatever the number of shards.
  const GRID_COLUMNS_MIN = 8;
  const GRID_COLUMNS_MAX = 32;
  // Every node is shown "stale" when the last good sample is older than this.
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

  async function request(method, path, candidateToken, payload) {
    const headers = {};
    const used = candidateToken === undefined ? token : candidateToken;
    if (used) headers.Authorization = `Bearer ${used}`;
    const init = { method, headers, cache: "no-store" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(path, init);
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
  async function api(path, method, body) {
    try {
      return await request(method || "GET", path, undefined, body);
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
    stopSampling();
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
      // The token file's content is the most common wrong paste.
      const looksLikeHash = /^(sessiondb admin token hashes|sha256:)/m.test(candidate);
      error.textContent = failure.status === 401 && looksLikeHash
        ? "That is the token's hash from <data-dir>/admin-token, not the token (401 unauthorized). "
          + "The token was printed once at the node's first start or given with SESSIONDB_ADMIN_TOKEN / --admin-token; see below to reset a lost one."
        : failure.status === 401
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
    startSampling();
    route();
  }

  // --- Cluster samples ----------------------------------------------------------
  //
  // One poller for the whole page: every second it reads the placement state
  // (`GET /v1/cluster`) and the members' reports (`GET /console/api/members`:
  // the serving node asks each member, within a short timeout, for its status
  // and per-project event counters). Each answer pair is one sample in a ring
  // buffer kept in the page; rates are differences between samples.

  const samples = [];
  let samplesTaken = 0;
  let lastCluster = null;
  let lastMembers = null;
  let lastSampleAtMs = 0;
  let stopSampling = () => {};
  const sampleListeners = new Set();

  function startSampling() {
    stopSampling();
    stopSampling = poll(async () => {
      try {
        const [cluster, members] = await Promise.all([api("/v1/cluster"), api("/console/api/members")]);
        lastCluster = cluster;
        lastMembers = members;
        lastSampleAtMs = Date.now();
        const nodes = {};
        for (const member of members.members) {
          if (!member.report) continue;
          const projects = {};
          for (const entry of member.report.project_events) projects[entry.project] = entry.events;
          nodes[member.node_id] = { status: member.report.status, projects };
        }
        samples.push({ atMs: lastSampleAtMs, nodes });
        if (samples.length > SAMPLES_MAX) samples.splice(0, samples.length - SAMPLES_MAX);
        // Samples taken since login (not capped like the buffer): readers
        // can wait for the next one.
        samplesTaken += 1;
        document.body.dataset.statusSamples = String(samplesTaken);
        document.body.dataset.lastSampleMs = String(lastSampleAtMs);
        setConnection(true, `live · node ${members.node_id}`);
      } catch (error) {
        // A refused token logs out (api); anything else is the node being
        // unreachable or failing: the page keeps its last numbers, says
        // since when they are stale, and offers no operation meanwhile.
        setConnection(false, `${lastSampleAtMs === 0 ? "node unreachable" : `stale since ${clockLabel(lastSampleAtMs)} ${consoleZone()}`}, retrying`,
          error.message);
      }
      for (const listener of sampleListeners) listener();
    }, SAMPLE_POLL_MS);
  }

  // The connection badge and the operation buttons: with the node
  // unreachable, no operation can be started.
  let connectionUp = true;
  function setConnection(up, text, cause) {
    connectionUp = up;
    const badge = $("#connection");
    badge.textContent = text;
    badge.title = cause ? `last error: ${cause}` : "";
    badge.classList.toggle("down", !up);
    document.body.dataset.connection = up ? "live" : "down";
    enableOperations();
  }

  function enableOperations() {
    for (const button of opButtons()) button.disabled = operationRunning || !connectionUp;
  }

  // Per-second rate of one node's counter between consecutive samples in
  // which the node answered.
  function rateSeries(nodeId, counter) {
    const points = [];
    for (let i = 1; i < samples.length; i += 1) {
      const before = samples[i - 1].nodes[nodeId];
      const after = samples[i].nodes[nodeId];
      const seconds = (samples[i].atMs - samples[i - 1].atMs) / 1000;
      if (!before || !after || seconds <= 0) continue;
      // A restarted node starts its counters at zero: no negative rates.
      const delta = after.status[counter] - before.status[counter];
      points.push([samples[i].atMs, Math.max(0, delta) / seconds]);
    }
    return points;
  }

  function gaugeSeries(nodeId, field) {
    return samples.filter((s) => s.nodes[nodeId]).map((s) => [s.atMs, s.nodes[nodeId].status[field]]);
  }

  // Accepted events of one project, cluster-wide: its total in the latest
  // sample (summed over the members that answered) and its rate over the
  // last RATE_WINDOW_MS (summed over the members that answered at both ends).
  function projectEvents(project) {
    if (samples.length === 0) return { total: 0, rate: 0, members: 0 };
    const latest = samples[samples.length - 1];
    let total = 0;
    for (const node of Object.values(latest.nodes)) total += node.projects[project] || 0;
    let earlier = null;
    for (let i = samples.length - 2; i >= 0 && latest.atMs - samples[i].atMs <= RATE_WINDOW_MS; i -= 1) {
      earlier = samples[i];
    }
    if (!earlier) return { total, rate: 0, members: Object.keys(latest.nodes).length };
    let delta = 0;
    for (const [id, node] of Object.entries(latest.nodes)) {
      const before = earlier.nodes[id];
      if (!before) continue;
      delta += Math.max(0, (node.projects[project] || 0) - (before.projects[project] || 0));
    }
    return { total, rate: delta / ((latest.atMs - earlier.atMs) / 1000), members: Object.keys(latest.nodes).length };
  }

  // --- Cluster overview -----------------------------------------------------------

  // The console's time zone for the overview's times: the one chosen in
  // its picker (kept for the session), else the projects' zone when they
  // all share one, else UTC. The experiment page has its own picker.
  const ZONE_STORAGE_KEY = "sessiondb.console.time_zone";
  const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  let projectZones = [];
  function consoleZone() {
    const chosen = sessionStorage.getItem(ZONE_STORAGE_KEY);
    if (chosen) return chosen;
    const zones = [...new Set(projectZones.map((p) => p.zone))];
    return zones.length === 1 ? zones[0] : "UTC";
  }

  // "HH:MM:SS" of `ms` in `timeZone`, by default the console's.
  function clockLabel(ms, timeZone) {
    const p = wallParts(ms, timeZone || consoleZone());
    return `${pad2(p.hour)}:${pad2(p.minute)}:${pad2(p.second)}`;
  }

  function renderZoneChoices() {
    const select = $("#overview-zone");
    const byZone = new Map();
    for (const { name, zone } of projectZones) byZone.set(zone, [...(byZone.get(zone) || []), name]);
    const zones = [...new Set(["UTC", browserZone, ...byZone.keys()])];
    const label = (zone) => {
      const notes = [];
      if (byZone.has(zone)) notes.push(`project ${byZone.get(zone).join(", ")}`);
      if (zone === browserZone && zone !== "UTC") notes.push("this browser");
      return notes.length === 0 ? zone : `${zone} (${notes.join("; ")})`;
    };
    const values = zones.join(",");
    if ([...select.options].map((o) => o.value).join(",") !== values) {
      select.replaceChildren(...zones.map((zone) => new Option(label(zone), zone)));
    }
    select.value = consoleZone();
    $("#overview-view").dataset.timeZone = consoleZone();
  }

  async function loadProjectZones() {
    try {
      const list = await api("/console/api/projects");
      projectZones = list.projects.map((p) => ({ name: p.name, zone: p.settings.time_zone || "UTC" }));
    } catch (_) {
      // Without the list the choice is UTC or this browser's zone.
    }
    renderZoneChoices();
    renderOverview();
  }

  function memberIds() {
    return lastCluster ? lastCluster.members.map((m) => m.node_id).sort((a, b) => a - b) : [];
  }

  // One colour per node, the same in the grid, its legend and the charts.
  function nodeColour(nodeId) {
    return Charts.colour(Math.max(0, memberIds().indexOf(nodeId)));
  }

  function raftOf(member, cluster) {
    if (member.node_id === cluster.leader) return "leader";
    return member.role === "learner" ? "learner" : "follower";
  }

  function renderNodes(cluster, members) {
    const reports = new Map(members ? members.members.map((m) => [m.node_id, m]) : []);
    const stale = Date.now() - lastSampleAtMs > HEALTH_STALE_MS;
    const body = $("#nodes-table tbody");
    const sorted = [...cluster.members].sort((a, b) => a.node_id - b.node_id);
    body.replaceChildren(...sorted.map((member) => {
      const check = reports.get(member.node_id);
      const status = check && check.report ? check.report.status : null;
      const healthy = !stale && check && check.health === "ok";
      const owned = cluster.shards.filter((s) => s.owner === member.node_id).length;
      const incoming = cluster.shards.filter((s) => s.moving_to === member.node_id).length;
      const row = document.createElement("tr");
      row.dataset.nodeId = String(member.node_id);
      const swatch = document.createElement("i");
      swatch.className = "swatch";
      swatch.style.background = nodeColour(member.node_id);
      const health = stale ? "stale" : (healthy ? "ok" : "unreachable");
      const cells = [
        ["node", member.node_id], ["address", member.address],
        ["role", member.role + (member.draining ? " · draining" : "")],
        ["raft", raftOf(member, cluster)], ["health", health], ["shards", owned],
        ["projects", status ? status.projects : "—"], ["live_visitors", status ? status.live_visitors : "—"],
        ["retained_events", status ? status.retained_events : "—"], ["events_accepted", status ? status.events_accepted : "—"],
        ["events_duplicate", status ? status.events_duplicate : "—"], ["events_rejected", status ? status.events_rejected : "—"],
        ["version", status ? status.version : "—"],
      ];
      for (const [field, value] of cells) {
        const cell = document.createElement("td");
        cell.dataset.field = field;
        cell.textContent = String(value);
        if (field === "node") cell.prepend(swatch);
        if (field === "health") {
          cell.className = healthy ? "ok" : "bad";
          cell.title = healthy
            ? (check.check_ms === 0 ? "this node" : `answered in ${check.check_ms} ms`)
            : (check && check.error) || "no answer from the node serving this page";
        }
        if (field === "shards" && incoming > 0) cell.title = `${incoming} moving in`;
        if (field === "raft" && member.node_id === cluster.leader) cell.className = "leader";
        row.appendChild(cell);
      }
      return row;
    }));
    const summary = $("#cluster-summary");
    summary.dataset.leader = cluster.leader === null ? "" : String(cluster.leader);
    summary.dataset.term = String(cluster.term);
    summary.textContent = `Raft leader ${cluster.leader === null ? "unknown" : `node ${cluster.leader}`} · term ${cluster.term}`
      + ` · ${cluster.members.length} member${cluster.members.length === 1 ? "" : "s"} · as seen by node ${cluster.node_id}`;
  }

  function renderShardMap(cluster) {
    const shards = cluster.shards;
    const grid = $("#shard-grid");
    if (grid.childElementCount !== shards.length) {
      grid.replaceChildren(...shards.map(() => {
        // Every shard is reachable by keyboard: Tab to it, Enter or Space
        // chooses it for a move (chooseShardByKey).
        const cell = document.createElement("div");
        cell.tabIndex = 0;
        cell.setAttribute("role", "button");
        return cell;
      }));
      // About twice as wide as tall: 8 shards in one row of large squares,
      // 256 in 23 columns.
      const columns = Math.min(GRID_COLUMNS_MAX, Math.max(GRID_COLUMNS_MIN, Math.ceil(Math.sqrt(shards.length * 2))));
      grid.style.gridTemplateColumns = `repeat(${columns}, 1fr)`;
    }
    const moving = shards.filter((s) => s.moving_to !== null && s.moving_to !== undefined);
    shards.forEach((assignment, index) => {
      const cell = grid.children[index];
      const isMoving = assignment.moving_to !== null && assignment.moving_to !== undefined;
      cell.className = `shard${isMoving ? " moving" : ""}${String(assignment.shard) === $("#move-shard").value ? " selected" : ""}`;
      cell.dataset.shard = String(assignment.shard);
      cell.dataset.owner = String(assignment.owner);
      cell.dataset.epoch = String(assignment.epoch);
      if (isMoving) cell.dataset.movingTo = String(assignment.moving_to); else delete cell.dataset.movingTo;
      cell.textContent = String(assignment.shard);
      cell.title = `shard ${assignment.shard} → node ${assignment.owner} (epoch ${assignment.epoch})`
        + (isMoving ? `, moving to node ${assignment.moving_to}` : "") + " · click to choose it for a move";
      cell.setAttribute("aria-label", cell.title);
      cell.style.background = nodeColour(assignment.owner);
      cell.style.outlineColor = isMoving ? nodeColour(assignment.moving_to) : "";
    });
    const owners = memberIds();
    const ownerCount = new Set(shards.map((s) => s.owner)).size;
    $("#shard-summary").textContent = `${shards.length} shards · ${ownerCount} owner${ownerCount === 1 ? "" : "s"}`
      + ` · ${moving.length} move${moving.length === 1 ? "" : "s"} in progress`;
    $("#shard-summary").dataset.moving = String(moving.length);
    $("#shard-legend").replaceChildren(...owners.map((owner) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = nodeColour(owner);
      item.append(swatch, `node ${owner}: ${shards.filter((s) => s.owner === owner).length}`);
      return item;
    }), ...(moving.length > 0 ? [(() => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.className = "moving-swatch";
      item.append(swatch, "moving (outline: the receiving node)");
      return item;
    })()] : []));
  }

  // The operations' node pickers follow the membership.
  function renderOperationChoices(cluster) {
    const ids = memberIds();
    for (const select of [$("#move-to"), $("#drain-node")]) {
      const current = select.value;
      if ([...select.options].map((o) => o.value).join(",") !== ids.join(",")) {
        select.replaceChildren(...ids.map((id) => new Option(`node ${id}`, String(id))));
        if (ids.includes(Number(current))) select.value = current;
      }
    }
    $("#move-shard").max = String(Math.max(0, cluster.shards.length - 1));
  }

  function renderCharts() {
    const ids = memberIds();
    const perNode = (f) => ids.map((id) => ({ name: `node ${id}`, points: f(id) }));
    Charts.line($("#chart-ingest"), perNode((id) => rateSeries(id, "events_accepted")), { xLabel: (ms) => clockLabel(ms), markers: false, yTitle: "events/s", xTitle: `time (${consoleZone()})` });
    Charts.line($("#chart-rejected"), perNode((id) => rateSeries(id, "events_rejected")), { xLabel: (ms) => clockLabel(ms), markers: false, yTitle: "events/s", xTitle: `time (${consoleZone()})` });
    Charts.line($("#chart-duplicates"), perNode((id) => rateSeries(id, "events_duplicate")), { xLabel: (ms) => clockLabel(ms), markers: false, yTitle: "events/s", xTitle: `time (${consoleZone()})` });
    Charts.line($("#chart-active"), perNode((id) => gaugeSeries(id, "live_visitors")), { xLabel: (ms) => clockLabel(ms), markers: false, yTitle: "visitors", xTitle: `time (${consoleZone()})` });
  }

  function renderOverview() {
    renderZoneChoices();
    if (!lastCluster) return;
    renderNodes(lastCluster, lastMembers);
    renderShardMap(lastCluster);
    renderOperationChoices(lastCluster);
    renderCharts();
  }

  function startOverview() {
    sampleListeners.add(renderOverview);
    renderOverview();
    loadProjectZones();
    return () => sampleListeners.delete(renderOverview);
  }

  // --- Operations -------------------------------------------------------------------
  //
  // Each operation asks for confirmation, then sends its request and, while
  // the request runs, shows the elapsed time and what the polled shard map
  // says about its progress; then the node's report or its error.

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

  function opButtons() {
    return document.querySelectorAll(".ops-panel button");
  }

  function showOpError(op, message) {
    const result = $("#op-result");
    result.dataset.op = op;
    result.dataset.state = "failed";
    const failure = document.createElement("p");
    failure.className = "error";
    failure.textContent = message;
    result.replaceChildren(failure);
  }

  // Runs one confirmed operation: `send` makes the request, `progress`
  // describes the latest shard map, `report` renders the answer.
  let operationRunning = false;
  // Counts confirmed operations; the panel carries it as `data-run` so a
  // reader can tell a new report from the previous one.
  let operationsStarted = 0;

  async function runOperation({ op, name, title, text, send, progress, report }) {
    // One at a time: the buttons are disabled meanwhile, but a form can
    // still be submitted with the Enter key.
    if (operationRunning || !connectionUp) return;
    const result = $("#op-result");
    const confirmed = await confirmAction(title, text);
    result.dataset.op = op;
    if (!confirmed) {
      result.dataset.state = "cancelled";
      result.textContent = `${name} cancelled.`;
      return;
    }
    operationRunning = true;
    operationsStarted += 1;
    result.dataset.run = String(operationsStarted);
    for (const button of opButtons()) button.disabled = true;
    const startedMs = Date.now();
    result.dataset.state = "running";
    result.dataset.progressUpdates = "0";
    const bar = document.createElement("progress");
    const label = document.createElement("span");
    const detail = document.createElement("p");
    detail.className = "muted progress-detail";
    result.replaceChildren(bar, label, detail);
    const tick = () => {
      label.textContent = ` ${name} running… ${((Date.now() - startedMs) / 1000).toFixed(1)} s`;
    };
    const onSample = () => {
      if (!progress || !lastCluster) return;
      detail.textContent = progress(lastCluster);
      result.dataset.progressUpdates = String(Number(result.dataset.progressUpdates) + 1);
    };
    tick();
    onSample();
    const ticker = setInterval(tick, 100);
    sampleListeners.add(onSample);
    try {
      const answer = await send();
      result.dataset.state = "done";
      const heading = document.createElement("p");
      heading.className = "ok";
      heading.textContent = `${name} finished at ${clockLabel(Date.now())} after ${((Date.now() - startedMs) / 1000).toFixed(1)} s.`;
      result.replaceChildren(heading, ...report(answer));
    } catch (error) {
      showOpError(op, `${name} failed: ${error.code}: ${error.message}`);
    } finally {
      clearInterval(ticker);
      sampleListeners.delete(onSample);
      operationRunning = false;
      enableOperations();
    }
  }

  function ownersSummary(cluster) {
    return memberIds().map((id) => `node ${id}: ${cluster.shards.filter((s) => s.owner === id).length}`).join(", ");
  }

  function movesInFlight(cluster) {
    return cluster.shards.filter((s) => s.moving_to !== null && s.moving_to !== undefined);
  }

  // A RebalanceReport, or a DrainReport (the same plus the node and the
  // shards it still owns).
  function rebalanceReport(answer) {
    const lines = [
      ...(answer.remaining_shards === undefined ? [] : [resultLine("remaining_shards", answer.remaining_shards)]),
      resultLine("planned", answer.plan.length), resultLine("moved", answer.moved.length),
      resultLine("skipped", answer.skipped.length),
      resultLine("failed", answer.failed ? `shard ${answer.failed.shard}: ${answer.failed.error}` : "none"),
    ];
    const list = document.createElement("ul");
    list.className = "moves";
    for (const move of answer.moved) {
      const item = document.createElement("li");
      item.dataset.shard = String(move.shard);
      item.textContent = `shard ${move.shard}: node ${move.from} → node ${move.to} (epoch ${move.epoch}, ${move.bytes} bytes, ${move.duration_ms} ms)`;
      list.appendChild(item);
    }
    if (answer.failed) {
      const failure = document.createElement("p");
      failure.className = "error";
      failure.textContent = `shard ${answer.failed.shard} (node ${answer.failed.from} → node ${answer.failed.to}) failed: ${answer.failed.error}: ${answer.failed.message}`;
      lines.push(failure);
    }
    if (answer.skipped.length > 0 || answer.remaining_shards > 0) {
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent = answer.remaining_shards > 0
        ? `Node ${answer.node_id} still owns ${answer.remaining_shards} shard(s); drain it again to continue.`
        : `${answer.skipped.length} planned moves were not attempted; run it again to continue.`;
      lines.push(note);
    }
    return [...lines, list];
  }

  function checkpoint() {
    return runOperation({
      op: "checkpoint",
      name: "Checkpoint",
      title: "Take a checkpoint now?",
      text: "The node serving this page copies its state (ingest pauses briefly), writes it to disk and deletes the log segments the checkpoint covers.",
      send: () => api("/v1/admin/checkpoint", "POST"),
      progress: null,
      report: (answer) => [
        resultLine("position", answer.position), resultLine("visitors", answer.visitors),
        resultLine("bytes", answer.bytes), resultLine("pause_ms", answer.pause_ms),
        resultLine("duration_ms", answer.duration_ms), resultLine("log_segments_removed", answer.log_segments_removed),
      ],
    });
  }

  function moveShard(event) {
    event.preventDefault();
    if (!lastCluster) return;
    const shard = Number($("#move-shard").value);
    const to = Number($("#move-to").value);
    const assignment = lastCluster.shards.find((s) => s.shard === shard);
    if (!Number.isInteger(shard) || !assignment || $("#move-shard").value === "") {
      showOpError("move", `Choose a shard between 0 and ${lastCluster.shards.length - 1} (or click one in the grid).`);
      return;
    }
    runOperation({
      op: "move",
      name: `Move of shard ${shard}`,
      title: `Move shard ${shard} to node ${to}?`,
      text: `Node ${assignment.owner} hands shard ${shard} with its visitors and deduplication state to node ${to}. `
        + "Events for the shard are refused with shard_moving while it is in flight; clients retry them.",
      send: () => api(`/v1/cluster/shards/${shard}/move`, "POST", { to }),
      progress: (cluster) => {
        const now = cluster.shards.find((s) => s.shard === shard);
        if (!now) return "";
        return `shard ${shard}: owner node ${now.owner}, epoch ${now.epoch}`
          + (now.moving_to !== null && now.moving_to !== undefined ? `, moving to node ${now.moving_to}` : "");
      },
      report: (answer) => [
        resultLine("shard", answer.shard), resultLine("from", answer.from), resultLine("to", answer.to),
        resultLine("epoch", answer.epoch), resultLine("bytes", answer.bytes), resultLine("duration_ms", answer.duration_ms),
      ],
    });
  }

  function rebalance() {
    runOperation({
      op: "rebalance",
      name: "Rebalance",
      title: "Rebalance the shards?",
      text: "The leader plans moves that even out shard counts, then load, over the members that hold shards (not draining ones), and runs them; each moved shard briefly refuses its events with shard_moving.",
      send: () => api("/v1/cluster/rebalance", "POST"),
      progress: (cluster) => `${movesInFlight(cluster).length} move(s) in flight · shards per node: ${ownersSummary(cluster)}`,
      report: rebalanceReport,
    });
  }

  function drain(event) {
    event.preventDefault();
    const node = Number($("#drain-node").value);
    if (!Number.isInteger(node) || $("#drain-node").value === "") {
      showOpError("drain", "Choose a node to drain.");
      return;
    }
    runOperation({
      op: "drain",
      name: `Drain of node ${node}`,
      title: `Drain node ${node}?`,
      text: `The leader moves every shard of node ${node} to the other members and stops giving it new ones, so it can be removed.`,
      send: () => api(`/v1/cluster/nodes/${node}/drain`, "POST"),
      progress: (cluster) => `node ${node} still owns ${cluster.shards.filter((s) => s.owner === node).length} shard(s)`
        + ` · ${movesInFlight(cluster).length} move(s) in flight`,
      report: rebalanceReport,
    });
  }

  function chooseShard(event) {
    const cell = event.target.closest(".shard");
    if (!cell) return;
    $("#move-shard").value = cell.dataset.shard;
    const owner = Number(cell.dataset.owner);
    const other = memberIds().find((id) => id !== owner);
    if (other !== undefined) $("#move-to").value = String(other);
    if (lastCluster) renderShardMap(lastCluster);
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
      const rate = document.createElement("span");
      rate.className = "rate";
      rate.dataset.rateOf = project.name;
      title.append(" ", rate);
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

  // Fills every project's events/s from the samples (see projectEvents).
  function renderProjectRates() {
    for (const span of document.querySelectorAll("#projects-list [data-rate-of]")) {
      const events = projectEvents(span.dataset.rateOf);
      span.dataset.eventsTotal = String(events.total);
      span.dataset.eventsRate = String(events.rate);
      span.textContent = `${events.rate.toFixed(1)} events/s · ${events.total} accepted`;
      span.title = `accepted events summed over the ${events.members} member(s) that answered; `
        + `the rate averages the last ${RATE_WINDOW_MS / 1000} s`;
    }
  }

  function startProjects() {
    const stopPolling = poll(async () => {
      renderProjects(await api("/console/api/projects"));
      renderProjectRates();
    }, PROJECTS_POLL_MS);
    sampleListeners.add(renderProjectRates);
    return () => { stopPolling(); sampleListeners.delete(renderProjectRates); };
  }

  // --- Experiment -------------------------------------------------------------------

  // Thousands separators everywhere a count is shown.
  const formatInteger = (n) => Math.round(n).toLocaleString("en-US");
  const integer = formatInteger;
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

  // Improvement with its 95% CI as text and as an error bar, then the
  // fixed-horizon p-value (valid for one planned look), then the
  // always-valid p-value with the confidence sequence in its tooltip (valid
  // at every look: the one to read on a live page, docs/statistics.md).
  function comparisonCells(prefix, comparison, axis, isBaseline) {
    if (!comparison) {
      return [textCell(isBaseline ? "baseline" : "—", "muted"), textCell("", "muted"), textCell("", "muted")];
    }
    const cell = document.createElement("td");
    cell.className = `improvement ${toneOf(comparison)}`;
    cell.dataset.metric = `${prefix}.relative_improvement`;
    cell.dataset.value = String(comparison.relative_improvement);
    cell.dataset.ciLow = String(comparison.ci_low);
    cell.dataset.ciHigh = String(comparison.ci_high);
    const text = document.createElement("span");
    // Better / worse in words and symbols too, not by colour alone.
    const tone = toneOf(comparison);
    const mark = tone === "better" ? "▲ " : tone === "worse" ? "▼ " : "";
    text.textContent = `${mark}${signedPercent(comparison.relative_improvement)} [${signedPercent(comparison.ci_low)}, ${signedPercent(comparison.ci_high)}]`;
    cell.title = tone === "better" ? "better than the baseline (the 95% interval is above zero)"
      : tone === "worse" ? "worse than the baseline (the 95% interval is below zero)" : "the 95% interval includes zero";
    cell.append(text, Charts.errorBar(comparison.relative_improvement, comparison.ci_low, comparison.ci_high,
      -axis, axis, { zero: 0, tone: toneOf(comparison) }));
    return [cell, metricCell(`${prefix}.p_value`, comparison.p_value, pValue), alwaysValidCell(prefix, comparison)];
  }

  function alwaysValidCell(prefix, comparison) {
    const p = comparison.always_valid_p_value;
    if (p === undefined || p === null) {
      const cell = textCell("—", "muted");
      cell.title = "not yet: a group has no spread (e.g. no conversions)";
      return cell;
    }
    const cell = metricCell(`${prefix}.always_valid_p_value`, p, pValue);
    cell.classList.add("always-valid");
    cell.title = `always-valid; 95% confidence sequence [${signedPercent(comparison.cs_low)}, ${signedPercent(comparison.cs_high)}]`;
    return cell;
  }

  // The split of visitors against the expected allocation: a banner when it
  // is broken, since then no comparison in the group can be trusted.
  function sampleRatioNote(srm) {
    const note = document.createElement("p");
    // Where the expected shares come from (older nodes say nothing: equal).
    const source = { stored: "the experiment's stored weights", query: "the query's weights" }[srm.weights_source] || "equal shares";
    const expected = `${Object.entries(srm.expected_weights).map(([name, weight]) => `${name} ${percent(weight)}`).join(" / ")}, ${source}`;
    note.dataset.srmPValue = String(srm.p_value);
    note.dataset.weightsSource = srm.weights_source || "equal";
    if (srm.flagged) {
      note.className = "banner srm-flagged";
      note.textContent = `Sample ratio mismatch: visitors are not split as expected (${expected}), p = ${pValue(srm.p_value)}. The assignment is broken; do not trust the comparisons below.`;
    } else {
      note.className = "muted srm-ok";
      note.textContent = `Split of visitors as expected (${expected}), p = ${pValue(srm.p_value)}.`;
    }
    return note;
  }

  function variationRow(variation) {
    const row = document.createElement("tr");
    row.dataset.variation = variation.variation;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = variation.variation;
    // A compatible format's id (Optimizely), beside the key it is stored under.
    if (variation.variation_id) {
      row.dataset.variationId = variation.variation_id;
      const id = document.createElement("small");
      id.className = "muted variation-id";
      id.textContent = ` id ${variation.variation_id}`;
      name.appendChild(id);
    }
    row.appendChild(name);
    return row;
  }

  // At phone width the tables turn into cards (style.css): each cell shows
  // its column's name from data-label.
  function labelCells(table) {
    const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
    for (const row of table.querySelectorAll("tbody tr")) {
      [...row.children].forEach((cell, index) => { if (names[index]) cell.dataset.label = names[index]; });
    }
    return table;
  }

  function groupTables(group, results) {
    const card = document.createElement("div");
    card.className = "card group";
    card.dataset.group = group.breakdown_value === undefined || group.breakdown_value === null ? "" : group.breakdown_value;
    const title = document.createElement("h2");
    title.textContent = results.breakdown ? `${results.breakdown} = ${group.breakdown_value}` : "All visitors";
    card.appendChild(title);
    if (group.srm) card.appendChild(sampleRatioNote(group.srm));

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
    card.appendChild(labelCells(overview));

    results.keys.forEach((key, keyIndex) => {
      const heading = document.createElement("h3");
      heading.textContent = `Conversion key: ${key}`;
      const table = document.createElement("table");
      table.className = "data";
      table.dataset.key = key;
      table.appendChild(headerRow(["Variation", "Unique", "Total", "Conversion rate", "Value / visitor",
        "Rate improvement (95% CI)", "p (one look)", "p (always valid)",
        "Value improvement (95% CI)", "p (one look)", "p (always valid)"]));
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
      card.append(heading, labelCells(table));
    });
    return card;
  }

  // --- Verdicts ---------------------------------------------------------------------
  //
  // One line per variation and conversion key at the top of the page: ahead,
  // behind, no difference, or not enough data. Below the minimum sample the
  // page says "not enough data" whatever the test says: with a handful of
  // visitors a single conversion swings the rate by tens of percent.

  // Visitors each of the variation and the baseline need, and unique
  // conversions the two need together, before a verdict is given.
  const VERDICT_VISITORS_MIN = 100;
  const VERDICT_CONVERSIONS_MIN = 10;
  // Two-sided significance level of a verdict (the intervals are 95%).
  const VERDICT_ALPHA = 0.05;
  // Active visitors are a HyperLogLog estimate: above the visitors by more
  // than this many standard errors is a warning, less is estimation noise.
  const ACTIVE_EXCESS_STANDARD_ERRORS = 3;

  const VERDICT_LABELS = {
    ahead: "▲ ahead",
    behind: "▼ behind",
    no_difference: "= no difference",
    not_enough_data: "… not enough data",
  };

  // The numbers a verdict rests on: the always-valid ones when the node
  // gives them (valid however often the page is looked at), else the
  // fixed-horizon ones (valid for one look at a planned sample size).
  function verdictEvidence(comparison) {
    if (typeof comparison.always_valid_p_value === "number"
      && typeof comparison.cs_low === "number" && typeof comparison.cs_high === "number") {
      return { p: comparison.always_valid_p_value, low: comparison.cs_low, high: comparison.cs_high, kind: "always-valid" };
    }
    return { p: comparison.p_value, low: comparison.ci_low, high: comparison.ci_high, kind: "fixed-horizon" };
  }

  function verdictOf(variation, baseline, keyIndex) {
    const metrics = variation.metrics[keyIndex];
    const base = baseline.metrics[keyIndex];
    const comparison = metrics.rate_comparison;
    const conversions = metrics.unique_conversions + base.unique_conversions;
    if (variation.visitors < VERDICT_VISITORS_MIN || baseline.visitors < VERDICT_VISITORS_MIN
      || conversions < VERDICT_CONVERSIONS_MIN || !comparison) {
      return {
        verdict: "not_enough_data",
        detail: `${formatInteger(variation.visitors)} and ${formatInteger(baseline.visitors)} visitors, `
          + `${formatInteger(conversions)} conversions; a verdict needs ${formatInteger(VERDICT_VISITORS_MIN)} visitors in each `
          + `and ${formatInteger(VERDICT_CONVERSIONS_MIN)} conversions`,
      };
    }
    const evidence = verdictEvidence(comparison);
    const significant = evidence.p < VERDICT_ALPHA;
    const verdict = significant && evidence.low > 0 ? "ahead" : significant && evidence.high < 0 ? "behind" : "no_difference";
    return {
      verdict,
      evidence,
      detail: `conversion rate ${percent(metrics.conversion_rate)} vs ${percent(base.conversion_rate)}, `
        + `${signedPercent(comparison.relative_improvement)} [${signedPercent(evidence.low)}, ${signedPercent(evidence.high)}], `
        + `p ${pValue(evidence.p).startsWith("<") ? pValue(evidence.p) : `= ${pValue(evidence.p)}`} (${evidence.kind})`,
    };
  }

  // Warnings that make the comparisons of a group doubtful.
  function groupWarnings(group) {
    const warnings = [];
    for (const variation of group.variations) {
      if (variation.conflicts > variation.visitors) {
        warnings.push({
          kind: "conflicts",
          text: `${variation.variation}: ${formatInteger(variation.conflicts)} conflicts for ${formatInteger(variation.visitors)} visitors — `
            + "decisions keep disagreeing with the visitors' first variation; check how variations are assigned.",
        });
      }
      const active = variation.active_visitors;
      if (active.value - ACTIVE_EXCESS_STANDARD_ERRORS * active.standard_error > variation.visitors) {
        warnings.push({
          kind: "active_visitors",
          text: `${variation.variation}: ${formatInteger(Math.round(active.value))} active visitors for ${formatInteger(variation.visitors)} visitors — `
            + "more visitors were active than were exposed; check that every visitor gets a decision event.",
        });
      }
    }
    if (group.srm && group.srm.flagged) {
      warnings.push({
        kind: "srm",
        text: `Sample ratio mismatch (p = ${pValue(group.srm.p_value)}): the visitors are not split as expected, so the comparisons are not trustworthy.`,
      });
    }
    return warnings;
  }

  function groupName(group, results) {
    return results.breakdown ? `${results.breakdown} = ${group.breakdown_value}` : "All visitors";
  }

  function renderVerdicts(results) {
    const box = $("#verdicts");
    const cards = results.groups.map((group) => {
      const card = document.createElement("div");
      card.className = "card verdicts";
      card.dataset.group = group.breakdown_value === undefined || group.breakdown_value === null ? "" : group.breakdown_value;
      const title = document.createElement("h2");
      title.textContent = `Verdict · ${groupName(group, results)}`;
      const note = document.createElement("span");
      note.className = "muted";
      note.textContent = ` against ${results.baseline}`;
      title.appendChild(note);
      card.appendChild(title);
      for (const warning of groupWarnings(group)) {
        const line = document.createElement("p");
        line.className = "warning";
        line.dataset.warning = warning.kind;
        line.setAttribute("role", "alert");
        line.textContent = `⚠ ${warning.text}`;
        card.appendChild(line);
      }
      const baseline = group.variations.find((v) => v.variation === results.baseline);
      const list = document.createElement("ul");
      list.className = "verdict-list";
      results.keys.forEach((key, keyIndex) => {
        for (const variation of group.variations) {
          if (!baseline || variation === baseline) continue;
          const verdict = verdictOf(variation, baseline, keyIndex);
          const item = document.createElement("li");
          item.dataset.variation = variation.variation;
          item.dataset.key = key;
          item.dataset.verdict = verdict.verdict;
          if (verdict.evidence) item.dataset.evidence = verdict.evidence.kind;
          const badge = document.createElement("strong");
          badge.className = `verdict ${verdict.verdict}`;
          badge.textContent = VERDICT_LABELS[verdict.verdict];
          const what = document.createElement("span");
          what.textContent = ` ${variation.variation} on ${key}`;
          const detail = document.createElement("span");
          detail.className = "muted";
          detail.textContent = ` · ${verdict.detail}`;
          item.append(badge, what, detail);
          list.appendChild(item);
        }
      });
      if (results.keys.length === 0) {
        const none = document.createElement("li");
        none.className = "muted";
        none.textContent = "No conversion yet: a verdict needs a conversion key.";
        list.appendChild(none);
      }
      card.appendChild(list);
      return card;
    });
    box.replaceChildren(...cards);
  }

  // --- Time zones -------------------------------------------------------------------
  //
  // The experiment page shows and takes times in the project's time zone
  // (or UTC, switchable), as ISO "YYYY-MM-DD HH:MM" with a 24-hour clock.

  function wallParts(ms, timeZone) {
    const parts = new Intl.DateTimeFormat("en-US", {
      timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(ms));
    const get = (type) => Number(parts.find((part) => part.type === type).value);
    return { year: get("year"), month: get("month"), day: get("day"), hour: get("hour") % 24, minute: get("minute"), second: get("second") };
  }

  const pad2 = (n) => String(n).padStart(2, "0");

  // "YYYY-MM-DD HH:MM" of `ms` in `timeZone`.
  function zonedText(ms, timeZone) {
    const p = wallParts(ms, timeZone);
    return `${p.year}-${pad2(p.month)}-${pad2(p.day)} ${pad2(p.hour)}:${pad2(p.minute)}`;
  }

  // How far `timeZone`'s wall clock is ahead of UTC at `ms`.
  function zoneOffsetMs(ms, timeZone) {
    const p = wallParts(ms, timeZone);
    return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000;
  }

  // Parses "YYYY-MM-DD HH:MM" (or with a "T") as a wall time in
  // `timeZone`; NaN when malformed. The offset is taken twice so a time
  // near a daylight-saving change lands on the right side of it.
  function parseZonedText(text, timeZone) {
    const match = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})$/.exec(text.trim());
    if (!match) return NaN;
    const [year, month, day, hour, minute] = match.slice(1).map(Number);
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59) return NaN;
    const wall = Date.UTC(year, month - 1, day, hour, minute);
    const guess = wall - zoneOffsetMs(wall, timeZone);
    return wall - zoneOffsetMs(guess, timeZone);
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
    let lastDrawnAtMs = 0;
    const resultsBox = $("#results");
    const errorBox = $("#experiment-error");
    const stateBox = $("#experiment-state");
    const breakdown = $("#breakdown");
    const keySelect = $("#chart-key");
    const groupSelect = $("#chart-group");
    const fromInput = $("#range-from");
    const toInput = $("#range-to");

    // Nothing of the previous page survives a navigation: results, charts,
    // key and breakdown options, the range and its inputs all start empty.
    function clearPage() {
      resultsBox.replaceChildren();
      for (const name of Object.keys(resultsBox.dataset)) delete resultsBox.dataset[name];
      for (const svg of document.querySelectorAll("#experiment-view svg.chart")) {
        svg.replaceChildren();
        delete svg.dataset.points;
      }
      $("#experiment-charts").hidden = true;
      $("#verdicts").replaceChildren();
      $("#chart-key-label").textContent = "";
      keySelect.replaceChildren();
      groupSelect.replaceChildren();
      $("#chart-group-label").hidden = true;
      breakdown.replaceChildren();
      fromInput.value = "";
      toInput.value = "";
      $("#range-shown").textContent = "";
      errorBox.hidden = true;
    }

    // One of: loading (nothing drawn yet), ready, empty (no such
    // experiment, or no visitor in the range), error (the node answered
    // with an error), stale (the node did not answer: the last numbers stay,
    // marked as stale).
    function setState(state, text) {
      resultsBox.dataset.state = state;
      stateBox.dataset.state = state;
      stateBox.hidden = state === "ready";
      stateBox.textContent = text || "";
    }

    clearPage();
    setState("loading", "Loading results…");

    // The zone times are shown and taken in: the project's until the
    // user picks UTC.
    const zoneSelect = $("#time-zone");
    let zone = "UTC";
    let zoneChosen = false;
    const utcInput = (ms) => zonedText(ms, zone);
    const parseUtcInput = (text) => parseZonedText(text, zone);
    function renderZone() {
      for (const label of document.querySelectorAll(".zone-name")) label.textContent = zone;
      zoneSelect.value = zone;
      document.querySelector("#experiment-view").dataset.timeZone = zone;
    }
    const onZone = () => {
      const from = parseUtcInput(fromInput.value);
      const to = parseUtcInput(toInput.value);
      zone = zoneSelect.value;
      zoneChosen = true;
      if (Number.isFinite(from)) fromInput.value = utcInput(from);
      if (Number.isFinite(to)) toInput.value = utcInput(to);
      renderZone();
      refresh().catch(showError);
    };
    zoneSelect.replaceChildren();
    renderZone();

    const showError = (error) => {
      if (error instanceof ApiError && error.status === 404) {
        // An unknown project or experiment: nothing to show, and nothing
        // left over from the page before.
        clearPage();
        setState("empty", error.code === "unknown_project"
          ? `There is no project named “${projectName}”.`
          : `No experiment “${experimentName}” in project “${projectName}” yet: an experiment appears with its first decision event.`);
        return;
      }
      if (!(error instanceof ApiError)) {
        // The node did not answer at all.
        setState("stale", lastDrawnAtMs === 0
          ? `Node unreachable (${error.message}), retrying…`
          : `Stale since ${clockLabel(lastDrawnAtMs, zone)} ${zone}, retrying (${error.message}).`);
        return;
      }
      errorBox.hidden = false;
      errorBox.textContent = `${error.code || "error"}: ${error.message}`;
      if (resultsBox.dataset.state !== "ready") setState("error", "The node refused the query; see the error above.");
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
    const onGroup = () => refresh();

    breakdown.addEventListener("change", onBreakdown);
    zoneSelect.addEventListener("change", onZone);
    keySelect.addEventListener("change", onKey);
    groupSelect.addEventListener("change", onGroup);
    fromInput.addEventListener("input", onRangeEdit);
    toInput.addEventListener("input", onRangeEdit);
    $("#query-form").addEventListener("submit", onApply);
    $("#range-reset").addEventListener("click", onReset);

    async function loadProject() {
      project = await api(`/console/api/projects/${encodeURIComponent(projectName)}`);
      breakdown.replaceChildren(new Option("(no breakdown)", ""),
        ...project.settings.breakdown_attributes.map((name) => new Option(name, name)));
      breakdown.value = query.breakdown;
      const projectZone = project.settings.time_zone || "UTC";
      zoneSelect.replaceChildren(...[...new Set([projectZone, "UTC"])].map((name) =>
        new Option(name === "UTC" ? "UTC" : `${name} (project)`, name)));
      if (!zoneChosen) zone = projectZone;
      renderZone();
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

    // With a breakdown the charts show one breakdown value's series (the
    // chosen one, else the first); without one, every visitor's.
    function chartVariations(series) {
      const label = $("#chart-group-label");
      if (!series.breakdown) {
        label.hidden = true;
        groupSelect.replaceChildren();
        resultsBox.dataset.chartGroup = "";
        return series.variations;
      }
      const groups = series.groups || [];
      const values = groups.map((group) => group.breakdown_value);
      const chosen = values.includes(groupSelect.value) ? groupSelect.value : values[0];
      if ([...groupSelect.options].map((o) => o.value).join("\u0000") !== values.join("\u0000")) {
        groupSelect.replaceChildren(...values.map((value) => new Option(`${series.breakdown} = ${value}`, value)));
      }
      if (chosen !== undefined) groupSelect.value = chosen;
      label.hidden = false;
      resultsBox.dataset.chartGroup = chosen === undefined ? "" : chosen;
      const group = groups.find((g) => g.breakdown_value === chosen);
      return group ? group.variations : [];
    }

    // The relative improvement of each variation over the baseline, as the
    // API computed it from the counters summed up to each bucket's end
    // (`cumulative` of every time-series point), with its always-valid
    // confidence sequence as a band. Nothing is computed here.
    function renderImprovement(series, variations, keyIndex, common) {
      const baseline = series.baseline;
      const names = variations.map((v) => v.variation);
      const lines = variations.filter((v) => v.variation !== baseline).map((v) => {
        const points = [];
        const band = [];
        for (const p of v.points) {
          const comparison = p.cumulative && p.cumulative[keyIndex] ? p.cumulative[keyIndex].rate_comparison : null;
          if (!comparison) continue;
          points.push([p.ts, comparison.relative_improvement, comparison]);
          if (comparison.cs_low !== undefined && comparison.cs_high !== undefined) {
            band.push([p.ts, comparison.cs_low, comparison.cs_high]);
          }
        }
        return { name: v.variation, points, band, colourIndex: names.indexOf(v.variation) };
      });
      const signed = (x) => `${x >= 0 ? "+" : "−"}${(Math.abs(x) * 100).toFixed(1)}%`;
      const tooltip = (_, point) => {
        const c = point[2];
        const sequence = c.cs_low !== undefined
          ? `always-valid 95% CS ${signed(c.cs_low)} … ${signed(c.cs_high)}, always-valid p ${c.always_valid_p_value.toFixed(4)}`
          : "always-valid CS not yet defined (no spread)";
        return `${signed(c.relative_improvement)} vs ${baseline} (${sequence}; fixed-horizon 95% CI ${signed(c.ci_low)} … ${signed(c.ci_high)})`;
      };
      // Whole percents on the axis keep its labels clear of its title.
      const tick = (x) => `${x > 0 ? "+" : x < 0 ? "−" : ""}${Math.round(Math.abs(x) * 100)}%`;
      // The first buckets' sequences are very wide; the axis spans twice
      // the latest ones (at least ±50 %) and clips what lies beyond, so the
      // current band stays readable. Tooltips keep the exact numbers.
      const latest = lines.flatMap((l) => {
        const b = l.band[l.band.length - 1];
        const p = l.points[l.points.length - 1];
        return [b ? Math.abs(b[1]) : 0, b ? Math.abs(b[2]) : 0, p ? Math.abs(p[1]) : 0];
      });
      const span = Math.max(0.5, 2 * Math.max(0, ...latest));
      Charts.line($("#chart-improvement"), lines, {
        ...common, yTitle: `improvement vs ${baseline || "baseline"}`, yFormat: tick,
        yMinLimit: Math.max(-1, -span), yMaxLimit: span, zeroLine: true, tooltip,
      });
    }

    function renderSeries(series, results) {
      // Within a day the ticks need only the time of day.
      const withinDay = results.to - results.from <= 86400000;
      const bucketLabel = (ms) => (withinDay ? zonedText(ms, zone).slice(11) : zonedText(ms, zone).slice(5));
      const keyIndex = Math.max(0, series.keys.indexOf(keySelect.value));
      const variations = chartVariations(series);
      const pick = (f) => variations.map((v) => ({ name: v.variation, points: v.points.map((p) => [p.ts, f(p)]) }));
      // With the default range the last interval ends with the current
      // bucket, which is still filling: it is drawn as partial.
      const lastStart = results.to - series.interval_ms;
      const partialFrom = query.from === null ? lastStart : null;
      const interval = formatDuration(series.interval_ms);
      const common = { xLabel: bucketLabel, xTitle: `bucket start (${zone}), ${interval} each`, partialFrom };
      const count = { ...common, integer: true, yFormat: (n) => (n >= 10000 ? Charts.shortNumber(n) : formatInteger(n)), tooltipFormat: formatInteger };
      Charts.line($("#chart-visitors"), pick((p) => p.visitors), { ...count, yTitle: "new visitors" });
      Charts.line($("#chart-sessions"), pick((p) => p.sessions), { ...count, yTitle: "sessions" });
      Charts.line($("#chart-series-active"), pick((p) => p.active_visitors), { ...count, yTitle: "active visitors" });
      Charts.line($("#chart-conversions"), series.keys.length === 0 ? [] : pick((p) => p.unique_conversions[keyIndex]),
        { ...count, yTitle: "converting visitors" });
      // Cumulative conversion rate: converting visitors over exposed
      // visitors, both summed from the start of the range.
      const cumulative = series.keys.length === 0 ? [] : variations.map((v) => {
        let visitors = 0;
        let conversions = 0;
        const points = [];
        for (const p of v.points) {
          visitors += p.visitors;
          conversions += p.unique_conversions[keyIndex];
          if (visitors > 0) points.push([p.ts, conversions / visitors]);
        }
        return { name: v.variation, points };
      });
      Charts.line($("#chart-cumulative-rate"), cumulative, {
        ...common, yTitle: "conversion rate", yMaxLimit: 1, yFormat: (x) => `${(x * 100).toFixed(1)}%`, tooltipFormat: percent,
      });
      const keyLabel = series.keys.length === 0 ? "(no conversions yet)" : `key ${series.keys[keyIndex]}`;
      $("#chart-key-label").textContent = keyLabel;
      $("#chart-cumulative-key").textContent = keyLabel;
      renderImprovement(series, series.keys.length === 0 ? [] : variations, keyIndex, common);
      $("#chart-improvement-key").textContent = keyLabel;
      resultsBox.dataset.seriesPoints = String(variations.reduce((n, v) => n + v.points.length, 0));
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
      if (query.breakdown) seriesParams.set("breakdown", query.breakdown);
      if (results.baseline) seriesParams.set("baseline", results.baseline);
      const series = await api(`${base}/timeseries?${seriesParams}`);
      if (sequence < refreshDrawn) return;
      refreshDrawn = sequence;
      errorBox.hidden = true;

      refreshes += 1;
      lastDrawnAtMs = Date.now();
      const visitors = results.groups.reduce((n, g) => n + g.variations.reduce((m, v) => m + v.visitors, 0), 0);
      if (visitors === 0) setState("empty", "No visitor in this range yet.");
      else setState("ready");
      $("#experiment-charts").hidden = false;
      resultsBox.dataset.from = String(results.from);
      resultsBox.dataset.to = String(results.to);
      resultsBox.dataset.breakdown = results.breakdown || "";
      resultsBox.dataset.baseline = results.baseline || "";
      resultsBox.dataset.keys = results.keys.join(",");
      resultsBox.replaceChildren(...results.groups.map((group) => groupTables(group, results)));
      // Asked by an id, the experiment is shown by its key, the id beside it.
      $("#experiment-title").textContent = `${projectName} / ${results.experiment}`
        + (results.experiment_id ? ` (id ${results.experiment_id})` : "");
      renderVerdicts(results);
      resultsBox.dataset.refreshes = String(refreshes);
      if (query.from === null && !rangeEdited && document.activeElement !== fromInput && document.activeElement !== toInput) {
        fromInput.value = utcInput(results.from);
        toInput.value = utcInput(results.to);
      }
      $("#range-shown").textContent = `showing ${utcInput(results.from)} → ${utcInput(results.to)} ${zone}`
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
      zoneSelect.removeEventListener("change", onZone);
      keySelect.removeEventListener("change", onKey);
      groupSelect.removeEventListener("change", onGroup);
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
  $("#move-form").addEventListener("submit", moveShard);
  $("#op-rebalance").addEventListener("click", rebalance);
  $("#drain-form").addEventListener("submit", drain);
  $("#shard-grid").addEventListener("click", chooseShard);
  $("#overview-zone").addEventListener("change", (event) => {
    sessionStorage.setItem(ZONE_STORAGE_KEY, event.target.value);
    renderOverview();
  });
  $("#shard-grid").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault();
    chooseShard(event);
  });
  window.addEventListener("hashchange", route);

  (async () => {
    if (token) {
      try {
        await request("GET", "/console/api/status", token);
        startSampling();
      } catch (_) {
        logout("The stored token no longer works. Log in again.");
        return;
      }
    }
    route();
  })();
})();
