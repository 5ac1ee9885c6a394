/* maggy's pages in the browser: theme, charts (ECharts), the trials table, live updates, stop buttons.
 *
 * Everything shown comes from the page's JSON (<script type="application/json" id="maggy-data">)
 * and from the app's JSON API; it is put into the page as text (textContent, never
 * innerHTML), and the charts draw text on a canvas (tooltips in "richText" mode), so
 * nothing a spec, a trial or a log holds is ever parsed as HTML.
 */
(function () {
  "use strict";

  // ------------------------------------------------------------ theme
  // Inside the Airflow UI's frame (same origin) follow its <html class="dark|light">;
  // alone, the UI's stored choice (localStorage "theme"), else the system's.
  var themeListeners = [];
  function parentTheme() {
    try {
      if (window.parent !== window) {
        var cls = window.parent.document.documentElement.classList;
        if (cls.contains("dark")) return "dark";
        if (cls.contains("light")) return "light";
      }
    } catch (e) { /* another origin: no access */ }
    return null;
  }
  function storedTheme() {
    try {
      var t = window.localStorage.getItem("theme");
      if (t === "dark" || t === "light") return t;
    } catch (e) { /* storage off */ }
    return null;
  }
  function currentTheme() {
    return parentTheme() || storedTheme() ||
      (window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  }
  function applyTheme() {
    var t = currentTheme();
    if (document.documentElement.dataset.theme !== t) {
      document.documentElement.dataset.theme = t;
      themeListeners.forEach(function (f) { f(t); });
    }
  }
  applyTheme();
  window.addEventListener("storage", applyTheme);
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  }
  try {
    if (window.parent !== window) {
      new MutationObserver(applyTheme).observe(window.parent.document.documentElement,
        { attributes: true, attributeFilter: ["class"] });
    }
  } catch (e) { /* another origin */ }

  // ------------------------------------------------------------ helpers
  var COLORS = { running: "#3b82f6", pending: "#9ca3af", finished: "#10b981",
    early_stopped: "#f59e0b", failed: "#ef4444", best: "#8b5cf6" };
  var charts = {}, options = {}, clicks = {};

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "-";
    if (isNum(v)) return Number(v.toPrecision(digits || 6)).toString();
    return typeof v === "string" ? v : JSON.stringify(v);
  }
  function config() { return document.getElementById("maggy-config").dataset; }
  function csrf() { return document.querySelector("meta[name=maggy-csrf]").content; }

  function draw(id, option, onClick) {
    var node = document.getElementById(id);
    if (!node || !window.echarts) return null;
    options[id] = option;
    if (onClick) clicks[id] = onClick;
    var chart = charts[id];
    if (!chart) {
      chart = window.echarts.init(node, currentTheme() === "dark" ? "dark" : null);
      if (clicks[id]) chart.on("click", clicks[id]);
      charts[id] = chart;
    }
    option.backgroundColor = "transparent";
    option.animation = false;
    if (option.tooltip) option.tooltip.renderMode = "richText";
    chart.setOption(option, { notMerge: true });
    return chart;
  }
  themeListeners.push(function () {
    Object.keys(charts).forEach(function (id) {
      charts[id].dispose();
      delete charts[id];
      draw(id, options[id]);
    });
  });
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (id) { charts[id].resize(); });
  });

  async function post(url) {
    var reply = await fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "X-Maggy-CSRF": csrf(), "Accept": "application/json" } });
    var body = {};
    try { body = await reply.json(); } catch (e) { /* not JSON */ }
    if (!reply.ok) throw new Error(body.detail || ("HTTP " + reply.status));
    return body;
  }
  async function getJson(url) {
    var reply = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    return reply.json();
  }

  // ------------------------------------------------------------ charts
  function curvesOption(trials, key, bestId) {
    var drawn = trials.filter(function (t) { return t.history && t.history.length; });
    var many = drawn.length > 30;
    // The best trial last, so it is drawn over the others.
    drawn.sort(function (a, b) { return (a.trial_id === bestId) - (b.trial_id === bestId); });
    var series = drawn.map(function (t) {
      var best = t.trial_id === bestId;
      return {
        id: t.trial_id, name: t.trial_id + (best ? " (best)" : "") + " " + t.status,
        type: "line", showSymbol: drawn.length < 10, symbolSize: 4, data: t.history,
        sampling: "lttb", z: best ? 10 : 2,
        color: best ? COLORS.best : (COLORS[t.status] || COLORS.pending),
        lineStyle: { width: best ? 3 : (many ? 1 : 1.5), opacity: best || !many ? 0.95 : 0.3,
          type: t.status === "early_stopped" ? "dashed" : (t.status === "failed" ? "dotted" : "solid") },
        emphasis: { focus: "series" },
      };
    });
    return {
      grid: { left: 60, right: 30, top: 30, bottom: 50 },
      tooltip: { trigger: "item" },
      xAxis: { type: "value", name: "step", nameLocation: "middle", nameGap: 28, minInterval: 1 },
      yAxis: { type: "value", name: key, scale: true },
      dataZoom: [{ type: "inside" }],
      series: series,
    };
  }

  function pointsOf(trials) {
    var out = {};
    trials.forEach(function (t) { out[t.trial_id] = (t.history || []).length; });
    return out;
  }

  function parallelOption(trials, names, space, key) {
    var ended = trials.filter(function (t) { return isNum(t.metric) && t.params; });
    var dims = names.map(function (name, i) {
      var entry = space[name] || [];
      var values = ended.map(function (t) { return t.params[name]; });
      var numeric = values.length > 0 && values.every(isNum);
      var axis = { dim: i, name: name };
      if (numeric) {
        axis.type = entry[2] === "log" ? "log" : "value";
        axis.scale = true;
      } else {
        axis.type = "category";
        axis.data = Array.from(new Set(values.map(function (v) { return fmt(v); })));
      }
      return axis;
    });
    dims.push({ dim: names.length, name: key, type: "value", scale: true });
    var rows = ended.map(function (t) {
      var row = names.map(function (n, i) {
        return dims[i].type === "category" ? fmt(t.params[n]) : t.params[n];
      });
      row.push(t.metric);
      return row;
    });
    var metrics = rows.map(function (r) { return r[r.length - 1]; });
    return {
      parallelAxis: dims,
      parallel: { left: 60, right: 90, top: 40, bottom: 30 },
      tooltip: { trigger: "item" },
      visualMap: rows.length ? { type: "continuous", dimension: names.length, right: 0, top: 40,
        min: Math.min.apply(null, metrics), max: Math.max.apply(null, metrics),
        calculable: true, inRange: { color: ["#ef4444", "#f59e0b", "#10b981"] } } : undefined,
      series: [{ type: "parallel", lineStyle: { width: 1.5, opacity: 0.6 }, data: rows }],
    };
  }

  function importanceOption(importances) {
    var names = Object.keys(importances).reverse();
    return {
      grid: { left: 120, right: 30, top: 20, bottom: 40 },
      tooltip: { trigger: "item" },
      xAxis: { type: "value", name: "importance", max: 1 },
      yAxis: { type: "category", data: names },
      series: [{ type: "bar", data: names.map(function (n) { return importances[n]; }),
        color: "#3b82f6", label: { show: true, position: "right",
          formatter: function (p) { return (100 * p.value).toFixed(1) + " %"; } } }],
    };
  }

  function historyOption(runs) {
    var labels = runs.map(function (r, i) {
      return isNum(r.ended) ? new Date(r.ended * 1000).toISOString().slice(0, 10) + " #" + (i + 1) : "#" + (i + 1);
    });
    var names = [];
    runs.forEach(function (r) {
      Object.keys(r.components).forEach(function (c) { if (names.indexOf(c) < 0) names.push(c); });
    });
    var palette = ["#3b82f6", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899", "#14b8a6", "#6366f1", "#84cc16"];
    var series = [];
    var changed = 0;
    names.forEach(function (name, k) {
      var color = palette[k % palette.length];
      var points = runs.map(function (r, i) {
        var e = r.components[name];
        if (!e || !isNum(e.delta)) return null;
        if (e.changed) changed += 1;
        return e.changed
          ? { value: [i, e.delta], symbol: "diamond", symbolSize: 16,
              itemStyle: { color: "#ef4444", borderColor: "#ef4444" }, name: "changed" }
          : { value: [i, e.delta] };
      });
      series.push({ name: name, type: "line", data: points, color: color, symbolSize: 7, connectNulls: true });
      var bars = runs.map(function (r, i) {
        var e = r.components[name];
        return e && isNum(e.ci_low) && isNum(e.ci_high) ? [i, e.ci_low, e.ci_high] : null;
      }).filter(function (x) { return x; });
      series.push({
        name: name, type: "custom", color: color, data: bars, z: 1,
        renderItem: function (params, api) {
          var shift = (k - (names.length - 1) / 2) * 6;
          var low = api.coord([api.value(0), api.value(1)]);
          var high = api.coord([api.value(0), api.value(2)]);
          var x = low[0] + shift;
          var style = { stroke: color, lineWidth: 1.5 };
          return { type: "group", children: [
            { type: "line", shape: { x1: x, y1: low[1], x2: x, y2: high[1] }, style: style },
            { type: "line", shape: { x1: x - 4, y1: low[1], x2: x + 4, y2: low[1] }, style: style },
            { type: "line", shape: { x1: x - 4, y1: high[1], x2: x + 4, y2: high[1] }, style: style },
          ] };
        },
      });
    });
    return {
      changed: changed,
      option: {
        grid: { left: 60, right: 30, top: 40, bottom: 50 },
        legend: { top: 0, data: names },
        tooltip: { trigger: "item" },
        xAxis: { type: "category", data: labels, name: "run", nameLocation: "middle", nameGap: 30 },
        yAxis: { type: "value", name: "delta (95 % interval)", scale: true },
        series: series,
      },
    };
  }

  // ------------------------------------------------------------ the trials table
  function TrialsTable(root, onStop) {
    this.root = root;
    this.onStop = onStop;
    this.sort = { col: "trial", dir: 1 };
    this.filters = {};
    this.columns = null;
  }
  TrialsTable.prototype.columnsFor = function (trials, key, canStop) {
    var params = [];
    trials.forEach(function (t) {
      Object.keys(t.params || {}).forEach(function (p) { if (params.indexOf(p) < 0) params.push(p); });
    });
    var cols = [
      { id: "trial", label: "trial", get: function (t) { return t.trial_id; } },
      { id: "status", label: "status", get: function (t) { return t.status; } },
      { id: "metric", label: key, get: function (t) { return t.metric; } },
      { id: "duration", label: "seconds", get: function (t) { return t.duration; } },
      { id: "worker", label: "worker", get: function (t) { return t.worker; } },
      { id: "attempts", label: "attempts", get: function (t) { return t.attempts; } },
    ];
    params.forEach(function (p) {
      cols.push({ id: "param:" + p, label: p, get: function (t) { return (t.params || {})[p]; } });
    });
    cols.push({ id: "stop_reason", label: "stop reason", get: function (t) { return t.stop_reason; } });
    if (canStop) cols.push({ id: "actions", label: "", get: function () { return null; }, action: true });
    return cols;
  };
  TrialsTable.prototype.matches = function (col, t) {
    var f = (this.filters[col.id] || "").trim();
    if (!f) return true;
    var v = col.get(t);
    var m = /^(>=|<=|>|<|=)\s*(-?[0-9.eE+-]+)$/.exec(f);
    if (m && isNum(v)) {
      var x = parseFloat(m[2]);
      return { ">": v > x, "<": v < x, ">=": v >= x, "<=": v <= x, "=": v === x }[m[1]];
    }
    return fmt(v).toLowerCase().indexOf(f.toLowerCase()) >= 0;
  };
  TrialsTable.prototype.render = function (trials, key, bestId, canStop, trialBase) {
    var self = this;
    var cols = this.columnsFor(trials, key, canStop);
    var ids = cols.map(function (c) { return c.id; }).join("|");
    if (!this.columns || this.columns.ids !== ids) {
      this.columns = { ids: ids, cols: cols };
      this.root.replaceChildren();
      var table = el("table", { id: "trials-table", "class": "trials" });
      var head = el("thead"), names = el("tr"), boxes = el("tr", { "class": "filters" });
      cols.forEach(function (c) {
        var th = el("th", { "data-col": c.id }, c.label);
        if (!c.action) {
          th.className = "sortable";
          th.addEventListener("click", function () {
            self.sort = { col: c.id, dir: self.sort.col === c.id ? -self.sort.dir : 1 };
            self.render(self.last[0], self.last[1], self.last[2], self.last[3], self.last[4]);
          });
        }
        names.appendChild(th);
        var cell = el("th");
        if (!c.action) {
          var input = el("input", { type: "search", "data-col": c.id, "aria-label": "filter " + c.label });
          input.value = self.filters[c.id] || "";
          input.addEventListener("input", function () {
            self.filters[c.id] = input.value;
            self.render(self.last[0], self.last[1], self.last[2], self.last[3], self.last[4]);
          });
          cell.appendChild(input);
        }
        boxes.appendChild(cell);
      });
      head.appendChild(names);
      head.appendChild(boxes);
      table.appendChild(head);
      table.appendChild(el("tbody"));
      this.root.appendChild(table);
    }
    this.last = [trials, key, bestId, canStop, trialBase];
    cols = this.columns.cols;
    this.root.querySelectorAll("th.sortable").forEach(function (th) {
      var on = th.dataset.col === self.sort.col;
      th.setAttribute("aria-sort", on ? (self.sort.dir > 0 ? "ascending" : "descending") : "none");
    });
    var sortCol = cols.find(function (c) { return c.id === self.sort.col; }) || cols[0];
    var rows = trials.filter(function (t) { return cols.every(function (c) { return self.matches(c, t); }); });
    rows.sort(function (a, b) {
      var x = sortCol.get(a), y = sortCol.get(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      if (isNum(x) && isNum(y)) return (x - y) * self.sort.dir;
      return fmt(x).localeCompare(fmt(y)) * self.sort.dir;
    });
    var body = el("tbody");
    rows.forEach(function (t) {
      var tr = el("tr", { "data-trial": t.trial_id, "data-status": t.status });
      if (t.trial_id === bestId) tr.className = "best";
      cols.forEach(function (c) {
        var td = el("td");
        if (c.id === "trial") {
          td.appendChild(el("a", { href: trialBase + encodeURIComponent(t.trial_id) }, t.trial_id));
        } else if (c.action) {
          if (t.status === "running") {
            var b = el("button", { type: "button", "class": "danger stop-trial", "data-trial": t.trial_id }, "stop");
            if (self.onStop.pending(t.trial_id)) b.disabled = true;
            b.addEventListener("click", function () { b.disabled = true; self.onStop.stop(t.trial_id); });
            td.appendChild(b);
          }
        } else {
          var v = c.get(t);
          td.textContent = c.id === "duration" && isNum(v) ? v.toFixed(2) : fmt(v);
          if (c.id === "status") td.className = "status " + t.status;
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    this.root.querySelector("tbody").replaceWith(body);
    this.root.dataset.rows = String(rows.length);
  };

  // ------------------------------------------------------------ pages
  function experimentPage() {
    var cfg = config();
    var data = JSON.parse(document.getElementById("maggy-data").textContent);
    var api = cfg.api, canEdit = cfg.canEdit === "yes";
    var stopsAsked = {}, experimentStopAsked = false;
    var ack = document.getElementById("ack");
    var stopper = {
      pending: function (id) { return !!stopsAsked[id]; },
      stop: async function (id) {
        stopsAsked[id] = true;
        ack.textContent = "Asking the coordinator to stop trial " + id + "…";
        try {
          var reply = await post(api + "/trials/" + encodeURIComponent(id) + "/stop");
          ack.textContent = "Stop of trial " + id + " requested (" + reply.reason + "); waiting for the coordinator…";
          poll();
        } catch (e) {
          delete stopsAsked[id];
          ack.textContent = "Trial " + id + " not stopped: " + e.message;
        }
      },
    };
    var table = new TrialsTable(document.getElementById("trials"), stopper);
    var stopButton = document.getElementById("stop-experiment");
    if (stopButton) {
      stopButton.addEventListener("click", async function () {
        stopButton.disabled = true;
        ack.textContent = "Asking the coordinator to stop the experiment…";
        try {
          var reply = await post(api + "/stop");
          experimentStopAsked = true;
          ack.textContent = "Stop of the experiment requested (" + reply.reason + "); waiting for the coordinator…";
          poll();
        } catch (e) {
          stopButton.disabled = false;
          ack.textContent = "The experiment was not stopped: " + e.message;
        }
      });
    }
    var timer = null, extrasDone = false;

    function render(d) {
      var trials = (d.trials || []).filter(function (t) { return t && t.trial_id; });
      var key = d.optimization_key || "metric";
      var bestId = (d.best || {}).trial_id;
      var running = d.status === "running";
      var status = document.getElementById("status");
      status.textContent = d.status;
      status.className = "status " + d.status;
      document.getElementById("reason").textContent = d.reason ? "(" + d.reason + ")" : "";
      var counts = {};
      trials.forEach(function (t) { counts[t.status] = (counts[t.status] || 0) + 1; });
      var ended = (counts.finished || 0) + (counts.early_stopped || 0) + (counts.failed || 0);
      var total = (d.spec || {}).num_trials;
      document.getElementById("counts").textContent = ended + " of " + (isNum(total) && data.kind !== "study" ? total : trials.length) +
        " trials ended: " + ["finished", "early_stopped", "failed", "running"].map(function (s) {
          return (counts[s] || 0) + " " + s.replace("_", "-");
        }).join(", ");
      document.getElementById("best").textContent = d.best
        ? "best: " + d.best.trial_id + " " + key + "=" + fmt(d.best.metric) + " " + JSON.stringify(d.best.params)
        : "best: none yet";
      document.getElementById("live-note").textContent = running
        ? "Running: the curves, the table and the counts update in place." + (d.live_error ? " (" + d.live_error + ")" : "")
        : "";
      if (stopButton) stopButton.parentNode.hidden = !running;
      var canStop = canEdit && running;
      var curves = draw("curves", curvesOption(trials, key, bestId), function (p) {
        if (p.seriesId) window.location.href = cfg.trialBase + encodeURIComponent(p.seriesId);
      });
      document.getElementById("curves").dataset.points = JSON.stringify(pointsOf(trials));
      if (!curves) document.getElementById("curves").textContent = "(the chart library did not load)";
      table.render(trials, key, bestId, canStop, cfg.trialBase);
      var space = (d.spec || {}).searchspace || {};
      if (document.getElementById("parallel")) {
        draw("parallel", parallelOption(trials, Object.keys(space), space, key));
      }
      // The coordinator's acknowledgements.
      Object.keys(stopsAsked).forEach(function (id) {
        var t = trials.find(function (x) { return x.trial_id === id; });
        if (t && t.status !== "running" && t.status !== "pending") {
          ack.textContent = "Trial " + id + " " + t.status + (t.stop_reason ? ": " + t.stop_reason : "");
          delete stopsAsked[id];
        }
      });
      if (experimentStopAsked && !running) {
        ack.textContent = "The experiment " + d.status + (d.reason ? ": " + d.reason : "");
        experimentStopAsked = false;
      }
      if (!running && !extrasDone) {
        extrasDone = true;
        extras();
      }
      return running;
    }

    async function extras() {
      if (document.getElementById("importance")) {
        var note = document.getElementById("importance-note");
        try {
          var found = (await getJson(api + "/importance")).importance;
          if (found && found.importances) {
            draw("importance", importanceOption(found.importances));
            note.textContent = "Optuna's " + found.evaluator + " evaluator over the trials with a metric.";
          } else {
            document.getElementById("importance").hidden = true;
            note.textContent = found && found.error ? "Not computed: " + found.error : "Not computed.";
          }
        } catch (e) { note.textContent = "Not computed: " + e.message; }
      }
      if (document.getElementById("ablation-history")) {
        var hnote = document.getElementById("ablation-history-note");
        try {
          var runs = (await getJson(api + "/ablation-history")).runs || [];
          if (runs.length) {
            var h = historyOption(runs);
            draw("ablation-history", h.option);
            var node = document.getElementById("ablation-history");
            node.dataset.runs = String(runs.length);
            node.dataset.changed = String(h.changed);
            hnote.textContent = runs.length + " run(s); a red diamond marks an effect flagged as changed since the run before.";
          } else {
            document.getElementById("ablation-history").hidden = true;
            hnote.textContent = "No history yet: it grows by one run each time the study ends.";
          }
        } catch (e) { hnote.textContent = "History unavailable: " + e.message; }
      }
    }

    async function poll() {
      if (timer) { clearTimeout(timer); timer = null; }
      var again = true;
      try {
        var d = await getJson(api + "/live");
        data = Object.assign(d, { kind: cfg.kind });
        again = render(data) || Object.keys(stopsAsked).length > 0 || experimentStopAsked;
      } catch (e) {
        document.getElementById("live-note").textContent = "Update failed (" + e.message + "); trying again.";
      }
      if (again) timer = setTimeout(poll, parseInt(cfg.pollMs, 10) || 2000);
    }

    data.kind = cfg.kind;
    if (render(data)) timer = setTimeout(poll, parseInt(cfg.pollMs, 10) || 2000);
    window.maggy = { charts: charts, data: function () { return data; } };
  }

  function trialPage() {
    var cfg = config();
    var data = JSON.parse(document.getElementById("maggy-data").textContent);
    var id = cfg.trialId;
    var ack = document.getElementById("ack");
    function render(t) {
      var status = document.getElementById("status");
      status.textContent = t.status;
      status.className = "status " + t.status;
      if (document.getElementById("curve")) {
        draw("curve", curvesOption([t], "metric", null));
        document.getElementById("curve").dataset.points = String((t.history || []).length);
      }
      return t.status === "running";
    }
    async function poll() {
      try {
        var d = await getJson(cfg.api + "/live");
        var t = (d.trials || []).find(function (x) { return x.trial_id === id; });
        if (t && !render(t)) {
          ack.textContent = ack.textContent && t.stop_reason ? "Trial " + id + " " + t.status + ": " + t.stop_reason : ack.textContent;
          return;
        }
      } catch (e) { /* try again */ }
      setTimeout(poll, parseInt(cfg.pollMs, 10) || 2000);
    }
    document.querySelectorAll("button.stop-trial").forEach(function (b) {
      b.addEventListener("click", async function () {
        b.disabled = true;
        try {
          var reply = await post(cfg.api + "/trials/" + encodeURIComponent(id) + "/stop");
          ack.textContent = "Stop requested (" + reply.reason + "); waiting for the coordinator…";
        } catch (e) {
          b.disabled = false;
          ack.textContent = "Not stopped: " + e.message;
        }
      });
    });
    if (render(data.trial) && data.experiment.status === "running") setTimeout(poll, parseInt(cfg.pollMs, 10) || 2000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var kind = document.body.dataset.page;
    if (kind === "experiment") experimentPage();
    else if (kind === "trial") trialPage();
  });
})();
