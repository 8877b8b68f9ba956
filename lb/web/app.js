// lb dashboard: polls the read-only control API of the admin listener and draws what it says.
// No framework and no library: DOM building with textContent only (ids, addresses and reasons
// are never parsed as HTML), and one hand-written canvas chart per pool.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const INTERVAL_MS = Math.min(60, Math.max(0.2, Number(params.get("interval")) || 1)) * 1000;
  const STATS_WINDOW = 5; // seconds: rates, p95 and errors are over this window
  const HISTORY_SECONDS = 180; // the chart's longest time span (it starts at one minute)
  // lb-scaler posts its decisions and actions to lb, which keeps the last ones
  // (lb/control/events.py). A 404 means an lb without that route: the panel says so.
  const SCALER_EVENTS = "/v1/events";
  const KEEP_EVENTS = 200;

  const state = {
    polls: 0,
    lastOk: 0,
    history: new Map(), // pool -> [{t, rps, replicas, eligible}]
    listenerSeen: new Map(), // listener -> [{t, count}] over the last STATS_WINDOW seconds
    cards: new Map(), // pool -> {card, head, canvas, tbody}
    events: [], // the scaler's decisions and actions, newest first (normalized)
    eventsSeq: 0, // the newest seq read from GET /v1/events
    scalerRoute: true,
  };
  window.lbDashboard = state; // for tests and curious operators

  // -- helpers ---------------------------------------------------------------------------------

  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }

  const $ = (id) => document.getElementById(id);
  const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });

  function fmtCount(n) {
    if (n === null || n === undefined) return "–";
    return Math.abs(n) < 10000 ? String(Math.round(n)) : compact.format(n);
  }
  function fmtRate(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    if (x === 0) return "0";
    if (x < 10) return x.toFixed(1);
    return x < 10000 ? String(Math.round(x)) : compact.format(x);
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 10000) return Math.round(ms) + " ms";
    return (ms / 1000).toFixed(1) + " s";
  }
  function fmtBytes(n) {
    if (!n) return "0 B";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }
  function fmtUptime(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${sec}s`;
    return `${sec}s`;
  }
  function fmtClock(t) {
    const d = new Date(t * 1000);
    return d.toLocaleTimeString("en-GB", { hour12: false });
  }
  function pct(x) {
    if (!x) return "";
    return x < 0.001 ? "<0.1%" : (x * 100).toFixed(x < 0.1 ? 1 : 0) + "%";
  }
  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) {
      const err = new Error(`${path}: HTTP ${r.status}`);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  // -- the scaler's decisions and actions -------------------------------------------------------

  const ACTION_DIRECTION = { scale_up: "up", scale_down: "down", hold: "hold" };

  // One stored event (lb/control/events.py EventView) as the page shows it. Decisions carry
  // their direction in data.action ("scale_up", "scale_down", "hold"); other kinds are
  // actions (registered, drained, removed, error, ...).
  function normalizeEvent(e) {
    const data = e.data || {};
    let dir = null;
    if (e.kind === "decision") {
      dir = ACTION_DIRECTION[data.action] || null;
      if (!dir && e.current !== null && e.desired !== null) {
        dir = e.desired > e.current ? "up" : e.desired < e.current ? "down" : "hold";
      }
      dir = dir || "hold";
    }
    return {
      seq: e.seq,
      time: typeof e.time === "number" ? e.time : null,
      pool: e.pool,
      kind: e.kind,
      decision: e.kind === "decision",
      dir,
      current: e.current ?? null,
      desired: e.desired ?? null,
      reason: e.message || "",
    };
  }

  async function fetchEvents() {
    if (!state.scalerRoute) return;
    try {
      const doc = await getJSON(`${SCALER_EVENTS}?since=${state.eventsSeq}&limit=${KEEP_EVENTS}`);
      if (doc.last_seq < state.eventsSeq) {
        // lb restarted (its event log is in memory): start over.
        state.events = [];
        state.eventsSeq = 0;
        return;
      }
      const fresh = doc.events.map(normalizeEvent).reverse();
      state.events = fresh.concat(state.events).slice(0, KEEP_EVENTS);
      state.eventsSeq = doc.last_seq;
    } catch (err) {
      // No such route: say so once. Anything else: keep what we have, try again later.
      if (err.status === 404 || err.status === 405) state.scalerRoute = false;
    }
  }

  // -- header ------------------------------------------------------------------------------------

  function renderInfo(info) {
    $("version").textContent = `v${info.version}`;
    const fact = (k, v) => el("span", null, k + " ", el("b", { text: v }));
    $("facts").replaceChildren(
      fact("pid", String(info.pid)),
      fact(
        "workers",
        `${info.workers_live}/${Math.max(1, info.workers)} live` +
          (info.worker_restarts ? `, ${info.worker_restarts} restarts` : ""),
      ),
      fact("uptime", fmtUptime(info.uptime)),
      fact("config", info.config),
    );
    renderStateFile(info);
  }

  // What is wrong with the state file, which otherwise shows only in lb's log.
  function renderStateFile(info) {
    const problems = [];
    const gone = info.state_file_discarded;
    if (gone) {
      const when = new Date(gone.at * 1000).toLocaleString("en-GB", { hour12: false });
      problems.push(
        el("div", {
          text:
            `The state file could not be used at startup; it was moved to ${gone.moved_to} ` +
            `at ${when}, and lb started from the config alone, without the runtime changes ` +
            `it held.\n${gone.error}`,
        }),
      );
    }
    if (info.state_file_error) {
      problems.push(
        el("div", {
          text:
            "Cannot write the state file (runtime changes are not saved): " +
            info.state_file_error,
        }),
      );
    }
    const box = $("state-file");
    box.replaceChildren(...problems);
    box.hidden = problems.length === 0;
  }

  function setStatus(kind, text) {
    $("status").dataset.status = kind;
    $("status-text").textContent = text;
  }

  // -- listeners ---------------------------------------------------------------------------------

  function renderListeners(doc, now) {
    const rows = doc.listeners.map((l) => {
      // Workers report about once a second: a rate over a few seconds, not between polls.
      const count = l.mode === "http" ? l.requests : l.accepted;
      const seen = state.listenerSeen.get(l.name) || [];
      if (seen.length && count < seen[seen.length - 1].count) seen.length = 0; // lb restarted
      seen.push({ t: now, count });
      while (seen.length > 2 && seen[1].t <= now - STATS_WINDOW) seen.shift();
      state.listenerSeen.set(l.name, seen);
      const first = seen[0];
      const rate = now - first.t >= 1 ? (count - first.count) / (now - first.t) : null;
      const r = l.responses || {};
      const http = l.mode === "http";
      return el(
        "tr",
        { "data-listener": l.name },
        el(
          "td",
          { class: "lead", "data-label": "Listener", title: `${l.workers_serving} worker(s)` },
          l.name,
          l.up ? null : [" ", badge("down", "no worker")],
        ),
        el("td", { "data-label": "Mode", text: l.mode }),
        el("td", { class: "mono", "data-label": "Bind", text: l.bind }),
        el("td", { "data-label": "Pools", text: l.pools.join(", ") || "–" }),
        el("td", { class: "num", "data-label": "Active", text: fmtCount(l.active) }),
        el("td", { class: "num", "data-label": "Accepted", text: fmtCount(l.accepted) }),
        el("td", {
          class: "num",
          "data-label": http ? "Req/s" : "Conn/s",
          title: http ? "requests per second" : "connections per second",
          text: fmtRate(rate),
        }),
        el("td", { class: "num", "data-label": "2xx", text: http ? fmtCount(r["2xx"]) : "–" }),
        el("td", { class: "num", "data-label": "4xx", text: http ? fmtCount(r["4xx"]) : "–" }),
        el("td", {
          class: "num" + (r["5xx"] ? " err" : ""),
          "data-label": "5xx",
          text: http ? fmtCount(r["5xx"]) : "–",
        }),
        el("td", { class: "num", "data-label": "In", text: fmtBytes(l.bytes_in) }),
        el("td", { class: "num", "data-label": "Out", text: fmtBytes(l.bytes_out) }),
      );
    });
    $("listeners").tBodies[0].replaceChildren(...rows);
  }

  // -- pools and backends ------------------------------------------------------------------------

  function poolCard(name) {
    let c = state.cards.get(name);
    if (c) return c;
    const head = el("div", { class: "card-head" });
    const canvas = el("canvas", {
      "data-pool": name,
      role: "img",
      "aria-label": `requests per second and replicas of pool ${name}`,
    });
    const legend = el(
      "div",
      { class: "legend" },
      el("span", { class: "rps" }, el("i"), "req/s"),
      el("span", { class: "replicas" }, el("i"), "replicas"),
      el("span", { class: "eligible" }, el("i"), "eligible"),
      el("span", { class: "decision" }, el("i"), "scaler decision"),
    );
    const table = el(
      "table",
      { class: "grid stack backends", "data-pool": name },
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          ["Backend", "Health", "Admin"].map((h) => el("th", { text: h })),
          el("th", { class: "num", text: "Weight" }),
          ["In-flight", "Req/s", "p95", "Errors"].map((h) => el("th", { class: "num", text: h })),
          el("th", { text: "Last check" }),
        ),
      ),
      el("tbody"),
    );
    const card = el(
      "article",
      { class: "card pool", "data-pool": name },
      head,
      el(
        "div",
        { class: "pool-body" },
        el("div", { class: "chart-box" }, legend, canvas),
        el("div", { class: "table-wrap" }, table),
      ),
    );
    c = { card, head, canvas, tbody: table.tBodies[0] };
    state.cards.set(name, c);
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => drawChart(name)).observe(canvas);
    }
    return c;
  }

  function badge(stateName, text) {
    return el("span", { class: "badge", "data-state": stateName, text: text ?? stateName });
  }

  // Where a scaler member runs (the Swarm provider puts node, task and slot in its metadata).
  function placement(meta) {
    if (!meta) return "";
    const parts = [];
    if (meta.node) parts.push(`node ${meta.node}`);
    if (meta.task) parts.push(`task ${meta.task.slice(0, 12)}`);
    if (meta.slot) parts.push(`slot ${meta.slot}`);
    return parts.join(" · ");
  }

  function backendRow(pool, b, s) {
    const health = el("td", { class: "state", "data-label": "Health" }, badge(b.health));
    if (b.ejected) health.append(badge("ejected", `ejected ${Math.ceil(b.ejected_for)}s`));
    const eff = b.effective_weight;
    const weight = el(
      "td",
      { class: "num weight", "data-label": "Weight", title: "weight / effective weight" },
      String(b.weight),
      eff !== b.weight ? el("small", null, " / " + (Math.round(eff * 10) / 10)) : null,
    );
    const errs = s ? s.errors : 0;
    const errors = el(
      "td",
      {
        class: "num" + (errs ? " err" : ""),
        "data-label": "Errors",
        title:
          `last ${STATS_WINDOW}s: 5xx and failed connects; since start: ` +
          `${b.connect_failures} connect failure(s), ${b.errors} 5xx`,
      },
      fmtCount(errs) + (s && s.error_rate ? ` (${pct(s.error_rate)})` : ""),
    );
    const label = el("td", { class: "lead", "data-label": "Backend" }, b.id);
    if (b.address !== b.id) label.append(el("div", { class: "muted mono", text: b.address }));
    const where = placement(b.metadata);
    if (where) {
      const title = b.metadata.task ? `task ${b.metadata.task}` : null;
      label.append(el("div", { class: "muted mono placement", title, text: where }));
    }
    return el(
      "tr",
      {
        "data-backend": b.id,
        "data-health": b.health,
        "data-admin": b.admin,
        class: b.health === "down" ? "row-down" : null,
      },
      label,
      health,
      el("td", { "data-label": "Admin" }, badge(b.admin)),
      weight,
      el("td", { class: "num", "data-label": "In-flight", text: fmtCount(b.active) }),
      el("td", { class: "num", "data-label": "Req/s", text: fmtRate(s ? s.rate : null) }),
      el("td", {
        class: "num",
        "data-label": "p95",
        text: fmtMs(s && s.latency_ms ? s.latency_ms.p95 : null),
      }),
      errors,
      el("td", { class: "check", "data-label": "Last check", text: b.last_check || "–" }),
    );
  }

  function renderPools(poolsDoc, statsDoc, listenersDoc, now) {
    const box = $("pools");
    // Listeners reach pools by default and through routes: name both.
    const reach = new Map();
    for (const l of listenersDoc.listeners) {
      for (const pool of l.pools) reach.set(pool, [...(reach.get(pool) || []), l.name]);
    }
    const seen = new Set();
    const latest = new Map();
    for (const d of state.events) if (d.decision && !latest.has(d.pool)) latest.set(d.pool, d);
    for (const p of poolsDoc.pools) {
      seen.add(p.name);
      const ps = statsDoc.pools[p.name];
      const c = poolCard(p.name);
      if (c.card.parentNode !== box) box.append(c.card);
      const kv = (k, v, title) =>
        el("span", { class: "kv", title }, k + " ", el("b", { text: v }));
      const dec = latest.get(p.name);
      const facts = [
        el("h3", { text: p.name }),
        kv("strategy", p.strategy),
        kv("listeners", (reach.get(p.name) || p.listeners).join(", ") || "–"),
        kv("backends", ps ? `${ps.backends_eligible}/${ps.backends_total} eligible` : "–"),
        kv("req/s", fmtRate(ps ? ps.rate : null), `over the last ${STATS_WINDOW}s`),
        kv("in-flight", fmtCount(ps ? ps.in_flight : null)),
        kv(
          "queued",
          fmtCount(ps ? (ps.queued || 0) + (ps.held || 0) : null),
          "waiting for a backend below its max_conn (queued) or for any eligible backend (held)",
        ),
        kv(
          "queue p95",
          fmtMs(ps && ps.queue_ms ? ps.queue_ms.p95 : null),
          `time waited in the queue, over the last ${STATS_WINDOW}s`,
        ),
        kv("p95", fmtMs(ps && ps.latency_ms ? ps.latency_ms.p95 : null)),
        kv("errors", ps && ps.errors ? `${ps.errors} (${pct(ps.error_rate)})` : "0"),
      ];
      if (dec && dec.desired !== null) {
        facts.push(kv("scaler", `${dec.current ?? "?"} → ${dec.desired}`, dec.reason));
      }
      c.head.replaceChildren(...facts);
      const rows = p.backends.map((b) => backendRow(p.name, b, ps ? ps.backends[b.id] : null));
      if (!rows.length) {
        rows.push(el("tr", null, el("td", { class: "empty", colspan: "9", text: "no backends" })));
      }
      c.tbody.replaceChildren(...rows);
      if (ps) {
        const h = state.history.get(p.name) || [];
        h.push({ t: now, rps: ps.rate, replicas: ps.backends_total, eligible: ps.backends_eligible });
        while (h.length && h[0].t < now - HISTORY_SECONDS - 5) h.shift();
        state.history.set(p.name, h);
      }
      drawChart(p.name);
    }
    for (const [name, c] of state.cards) {
      if (!seen.has(name)) {
        c.card.remove();
        state.cards.delete(name);
        state.history.delete(name);
      }
    }
  }

  // -- the chart ---------------------------------------------------------------------------------

  // A round tick step (1, 2 or 5 times a power of ten) giving about four intervals up to x.
  function niceStep(x) {
    const raw = Math.max(x, 1e-9) / 4;
    const p = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function drawChart(pool) {
    const c = state.cards.get(pool);
    if (!c) return;
    const canvas = c.canvas;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const pts = state.history.get(pool) || [];
    const m = { l: 44, r: 30, t: 10, b: 20 };
    const pw = w - m.l - m.r, ph = h - m.t - m.b;
    const now = Date.now() / 1000;
    // One minute at first, growing with the history up to HISTORY_SECONDS.
    const span = Math.min(HISTORY_SECONDS, Math.max(60, pts.length ? now - pts[0].t : 0));
    const t0 = now - span;
    const x = (t) => m.l + ((t - t0) / span) * pw;
    const rpsPeak = Math.max(1, ...pts.map((p) => p.rps)) * 1.05;
    const rpsStep = niceStep(rpsPeak);
    const rpsMax = Math.ceil(rpsPeak / rpsStep) * rpsStep;
    const repMax = Math.max(2, ...pts.map((p) => p.replicas + 1));
    const yl = (v) => m.t + ph - (v / rpsMax) * ph;
    const yr = (v) => m.t + ph - (v / repMax) * ph;
    const muted = cssVar("--muted"), line = cssVar("--line");
    const rpsColor = cssVar("--rps"), repColor = cssVar("--replicas");

    // grid and axes
    g.font = "11px system-ui, sans-serif";
    g.lineWidth = 1;
    g.strokeStyle = line;
    g.fillStyle = muted;
    g.textBaseline = "middle";
    for (let i = 0; i * rpsStep <= rpsMax + 1e-9; i++) {
      const v = i * rpsStep;
      const yy = Math.round(yl(v)) + 0.5;
      g.beginPath();
      g.moveTo(m.l, yy);
      g.lineTo(m.l + pw, yy);
      g.stroke();
      g.textAlign = "right";
      g.fillText(v >= 1000 ? compact.format(v) : String(Math.round(v * 100) / 100), m.l - 6, yy);
    }
    g.textAlign = "left";
    const step = repMax <= 6 ? 1 : Math.ceil(repMax / 5);
    for (let v = 0; v <= repMax; v += step) g.fillText(String(v), m.l + pw + 6, yr(v));
    g.textAlign = "center";
    g.textBaseline = "top";
    const tick = span <= 60 ? 15 : span <= 120 ? 30 : 60;
    for (let s = Math.floor(span / tick) * tick; s >= 0; s -= tick) {
      const label = s === 0 ? "now" : span <= 120 ? `-${s}s` : `-${s / 60}m`;
      g.fillText(label, x(now - s), m.t + ph + 5);
    }

    if (!pts.length) {
      g.textBaseline = "middle";
      g.fillText("waiting for data…", m.l + pw / 2, m.t + ph / 2);
      return;
    }
    g.save();
    g.beginPath();
    g.rect(m.l, m.t - 2, pw, ph + 4);
    g.clip();

    // req/s: a line over a light area
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), yl(p.rps)) : g.moveTo(x(p.t), yl(p.rps))));
    g.lineTo(x(pts[pts.length - 1].t), yl(0));
    g.lineTo(x(pts[0].t), yl(0));
    g.closePath();
    g.globalAlpha = 0.12;
    g.fillStyle = rpsColor;
    g.fill();
    g.globalAlpha = 1;
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), yl(p.rps)) : g.moveTo(x(p.t), yl(p.rps))));
    g.strokeStyle = rpsColor;
    g.lineWidth = 2;
    g.lineJoin = "round";
    g.stroke();

    // replicas (solid) and eligible (dashed): step lines on the right axis
    const stepLine = (key, dash) => {
      g.beginPath();
      pts.forEach((p, i) => {
        if (i) g.lineTo(x(p.t), yr(pts[i - 1][key]));
        else g.moveTo(x(p.t), yr(p[key]));
        g.lineTo(x(p.t), yr(p[key]));
      });
      g.setLineDash(dash);
      g.strokeStyle = repColor;
      g.lineWidth = 2;
      g.stroke();
      g.setLineDash([]);
    };
    stepLine("eligible", [4, 3]);
    stepLine("replicas", []);

    // scaler decisions that changed something: a marker at the top, pointing the way it went
    g.fillStyle = repColor;
    for (const d of state.events) {
      if (d.pool !== pool || !d.decision || d.time === null || d.time < t0 || d.dir === "hold") {
        continue;
      }
      const xx = x(d.time), yy = m.t + 2;
      g.beginPath();
      if (d.dir === "up") {
        g.moveTo(xx - 5, yy + 8);
        g.lineTo(xx + 5, yy + 8);
        g.lineTo(xx, yy);
      } else {
        g.moveTo(xx - 5, yy);
        g.lineTo(xx + 5, yy);
        g.lineTo(xx, yy + 8);
      }
      g.closePath();
      g.fill();
    }
    g.restore();
  }

  // -- scaler panel ------------------------------------------------------------------------------

  function renderScaler() {
    const box = $("scaler");
    if (!state.events.length) {
      box.replaceChildren(
        el("p", {
          class: "muted",
          text: state.scalerRoute
            ? "No scaler decisions yet. lb-scaler reports each decision here, with its reason."
            : `This lb has no scaler events route (${SCALER_EVENTS}).`,
        }),
      );
      return;
    }
    const arrow = { up: "▲ scale up", down: "▼ scale down", hold: "● hold" };
    const rows = state.events.slice(0, 30).map((d) =>
      el(
        "tr",
        {
          "data-pool": d.pool,
          "data-kind": d.kind,
          "data-dir": d.dir,
          class: d.decision ? "decision" : "action",
        },
        el("td", { class: "lead", "data-label": "Time", text: d.time ? fmtClock(d.time) : "–" }),
        el("td", { "data-label": "Pool", text: d.pool }),
        el(
          "td",
          { "data-label": "What" },
          d.decision
            ? el("span", { class: "dir", "data-dir": d.dir, text: arrow[d.dir] })
            : el("span", { class: "kind", text: d.kind.replaceAll("_", " ") }),
        ),
        el("td", {
          class: "num",
          "data-label": "Replicas",
          text: d.desired === null ? "–" : `${d.current ?? "?"} → ${d.desired}`,
        }),
        el("td", { class: "wrap reason", "data-label": "Reason", text: d.reason || "–" }),
      ),
    );
    const table = el(
      "table",
      { class: "grid stack decisions" },
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          el("th", { text: "Time" }),
          el("th", { text: "Pool" }),
          el("th", { text: "What" }),
          el("th", { class: "num", text: "Replicas" }),
          el("th", { text: "Reason" }),
        ),
      ),
      el("tbody", null, rows),
    );
    box.replaceChildren(el("div", { class: "table-wrap" }, table));
  }

  // -- the loop ----------------------------------------------------------------------------------

  async function poll() {
    const started = performance.now();
    try {
      const [info, listeners, pools, stats] = await Promise.all([
        getJSON("/v1/info"),
        getJSON("/v1/listeners"),
        getJSON("/v1/pools"),
        getJSON(`/v1/stats?window=${STATS_WINDOW}`),
        fetchEvents(),
      ]);
      const now = Date.now() / 1000;
      renderInfo(info);
      renderListeners(listeners, now);
      renderPools(pools, stats, listeners, now);
      renderScaler();
      state.polls += 1;
      state.lastOk = now;
      document.body.dataset.polls = String(state.polls);
      $("alert").hidden = true;
      setStatus("live", "live · " + fmtClock(now));
    } catch (err) {
      setStatus("error", "unreachable");
      const alert = $("alert");
      alert.textContent =
        `Cannot read the API (${err.message}); retrying every ${INTERVAL_MS / 1000}s. ` +
        (state.lastOk ? `Last update ${fmtClock(state.lastOk)}.` : "");
      alert.hidden = false;
    } finally {
      setTimeout(poll, Math.max(100, INTERVAL_MS - (performance.now() - started)));
    }
  }

  function start() {
    $("interval").textContent = String(INTERVAL_MS / 1000);
    window.addEventListener("resize", () => state.cards.forEach((_c, name) => drawChart(name)));
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
