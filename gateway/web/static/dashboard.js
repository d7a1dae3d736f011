// Dashboard charts: GET /dashboard/data answers every chart's series on one time axis (epoch
// seconds); each is drawn with uPlot (static/vendor/uplot). Colours repeat past the palette.
(function () {
  "use strict";
  const PALETTE = ["#0b5cad", "#1a7f37", "#b42318", "#9a6700", "#8250df", "#bf3989", "#1b7c83", "#57606a"];
  const plots = {};
  const status = document.getElementById("status");
  const windowSelect = document.getElementById("window");

  function percent(value) {
    return value == null ? "–" : (value * 100).toFixed(1) + " %";
  }

  function millis(value) {
    return value == null ? "–" : value >= 10000 ? (value / 1000).toFixed(1) + " s" : Math.round(value) + " ms";
  }

  const FORMAT = { ratio: percent, ms: millis, count: (v) => (v == null ? "–" : String(v)) };

  function width(el) {
    return Math.max(320, el.clientWidth - 4);
  }

  function draw(id, chart, x) {
    const section = document.getElementById("chart-" + id);
    const target = section.querySelector(".plot");
    if (plots[id]) {
      plots[id].destroy();
      delete plots[id];
    }
    target.textContent = "";
    if (!chart.series.length || !x.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "no events in this window";
      target.appendChild(empty);
      return;
    }
    const format = FORMAT[chart.unit] || FORMAT.count;
    const series = [{}].concat(chart.series.map((s, i) => ({
      label: s.label,
      stroke: PALETTE[i % PALETTE.length],
      width: 2,
      // null is "nothing to measure" (no verdicts, no events): join across it; counts have zeros.
      spanGaps: true,
      points: { show: chart.unit !== "count" || x.length < 40, size: 5 },
      value: (u, v) => format(v),
    })));
    const opts = {
      // Times in UTC, as on the job page's timeline.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      width: width(section),
      height: 260,
      series: series,
      scales: chart.unit === "ratio" ? { y: { range: [0, 1] } } : {},
      axes: [{}, { values: (u, ticks) => ticks.map(format), size: 70 }],
      legend: { live: true },
    };
    const data = [x].concat(chart.series.map((s) => s.values));
    plots[id] = new uPlot(opts, data, target);
  }

  function tile(id, text) {
    document.getElementById("tile-" + id).textContent = text;
  }

  async function load() {
    status.textContent = "loading…";
    delete document.body.dataset.loaded;
    const params = new URLSearchParams({ window_s: windowSelect.value });
    let body;
    try {
      const response = await fetch("/dashboard/data?" + params, { credentials: "same-origin" });
      body = await response.json();
      if (!response.ok) throw new Error(body.detail || body.title || body.error || response.statusText);
    } catch (err) {
      status.textContent = "could not load the data: " + err.message;
      return;
    }
    const totals = body.totals;
    tile("artifact_rate", totals.quality_verdicts ? percent(totals.artifact_rate) : "–");
    tile("first_pass_yield", totals.first_pass_scored ? percent(totals.first_pass_yield) : "–");
    tile("p95", millis(totals.latency_ms.p95));
    tile("published", String(totals.published));
    Object.keys(body.charts).forEach((id) => draw(id, body.charts[id], body.x));
    const since = new Date(body.since_ms).toISOString().slice(0, 19).replace("T", " ");
    status.textContent = `since ${since} UTC, ${body.bucket_s} s per point`;
    document.body.dataset.loaded = "true";
  }

  document.getElementById("refresh").addEventListener("click", load);
  windowSelect.addEventListener("change", load);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      Object.keys(plots).forEach((id) => {
        const section = document.getElementById("chart-" + id);
        plots[id].setSize({ width: width(section), height: 260 });
      });
    }, 150);
  });
  load();
})();
