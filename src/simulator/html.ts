/**
 * The HTML report: one self-contained file (uPlot and its stylesheet inlined, the data embedded, no request leaves
 * the page) with the run's parameters, connected devices and rates over time, errors over time, and the connect and
 * end-to-end latency distributions with their percentiles.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Histogram, addHistograms, decodeHistogram, percentileCurve, percentileTable } from './histogram.js';
import type { SimulationReport } from './report-format.js';
import { reportHistograms } from './report.js';

/** Files of the chart library, copied next to this module by the build (see scripts/copy-report-assets.mjs). */
const ASSETS = { script: 'uPlot.iife.min.js', style: 'uPlot.min.css', license: 'LICENSE' } as const;

/**
 * Read a chart-library file: from `assets/` next to this module (the built package), else from `node_modules`
 * (running from the TypeScript sources, under vitest).
 */
function asset(name: string): string {
  const built = join(dirname(fileURLToPath(import.meta.url)), 'assets', name);
  if (existsSync(built)) return readFileSync(built, 'utf8');
  const require = createRequire(import.meta.url);
  const file = name === ASSETS.license ? join(dirname(require.resolve('uplot/package.json')), 'LICENSE') : require.resolve(`uplot/dist/${name}`);
  return readFileSync(file, 'utf8');
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON that is safe inside a `<script>` element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

function latencyData(histogram: Histogram): { count: number; meanMs: number | null; curve: { nines: number[]; valueMs: number[] }; table: Array<{ percentile: number; valueMs: number }> } {
  const count = histogram.totalCount;
  return {
    count,
    meanMs: count === 0 ? null : Math.round(histogram.mean) / 1_000,
    curve: percentileCurve(histogram),
    table: percentileTable(histogram),
  };
}

/** What the page's script draws: computed here, so the page needs no HdrHistogram decoder. */
function pageData(report: SimulationReport): unknown {
  const histograms = reportHistograms(report);
  const { series } = report;
  const seconds = series.connected.map((_, i) => (series.startMs + i * series.intervalMs) / 1_000);
  const perSecond = (values: number[]): number[] => values.map((v) => (v * 1_000) / series.intervalMs);
  const errorCodes = Object.keys(series.errors);
  return {
    run: report.run,
    shards: report.shards,
    summary: {
      devices: report.devices,
      provisioned: report.provisioned,
      connected: report.connected,
      failedConnects: report.failedConnects,
      reconnects: report.reconnects,
      connectRatePerSec: report.connectRatePerSec,
      published: report.published,
      acked: report.acked,
      delivered: report.delivered,
      publishRatePerSec: report.publishRatePerSec,
      errors: report.errors,
      peakRssMB: report.peakRssMB,
      elapsedMs: report.elapsedMs,
    },
    series: {
      t: seconds,
      connected: series.connected,
      connects: perSecond(series.connects),
      published: perSecond(series.published),
      acked: perSecond(series.acked),
      delivered: perSecond(series.delivered),
      errors: Object.fromEntries(errorCodes.map((code) => [code, perSecond(series.errors[code] as number[])])),
    },
    latency: { connect: latencyData(histograms.connectLatencyUs), e2e: latencyData(histograms.e2eLatencyUs), heal: latencyData(healOf(report)) },
    faults: (report.faults ?? []).map((f) => ({
      id: f.id,
      kind: f.kind,
      label: f.label,
      // Seconds since the epoch, as the charts' x axis.
      start: f.startedAt === null ? null : Date.parse(f.startedAt) / 1_000,
      end: f.endedAt === null ? null : Date.parse(f.endedAt) / 1_000,
      targeted: f.targeted,
      hit: f.hit,
      offlineAtStart: f.offlineAtStart,
      healed: f.healed,
      notHealed: f.notHealed,
      healMs: f.healMs,
      messages: f.messages,
      errors: f.errors,
    })),
    delivery: report.delivery ?? null,
    scenario: report.run.scenario ?? null,
  };
}

/** Every fault's heal times together. */
function healOf(report: SimulationReport): Histogram {
  return addHistograms((report.faults ?? []).map((f) => decodeHistogram(f.healUs)));
}

/**
 * Render a report (of one run, or merged by {@link mergeReports}) as one self-contained HTML file that works offline.
 * The page keeps its charts in `window.simulationReport.charts` (uPlot instances, by element id) once drawn.
 */
export function renderReportHtml(report: SimulationReport): string {
  const title = `Simulation of ${report.devices} devices, ${report.run.startedAt}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>${escapeHtml(title)}</title>
<!-- Made by apsaramq-device ${escapeHtml(report.run.version)} (simulate / report merge). Charts: uPlot, inlined; its license:
${escapeHtml(asset(ASSETS.license)).replace(/--/g, '- -')}
-->
<style>${asset(ASSETS.style)}</style>
<style>${PAGE_STYLE}</style>
</head>
<body>
<header><h1>${escapeHtml(title)}</h1><p id="headline"></p></header>
<section><h2>Connected devices</h2><div id="chart-connected" class="chart"></div></section>
<section><h2>Rates (per second)</h2><div id="chart-rates" class="chart"></div></section>
<section><h2>Errors (per second, by code)</h2><div id="chart-errors" class="chart"></div></section>
<section class="pair">
<div><h2>Connect latency</h2><p class="note">From opening the connection to CONNACK 0, by percentile.</p><div id="chart-connect-latency" class="chart"></div><table id="table-connect-latency"></table></div>
<div><h2>End-to-end latency</h2><p class="note">From the send time in the payload to its arrival back at the device, by percentile.</p><div id="chart-e2e-latency" class="chart"></div><table id="table-e2e-latency"></table></div>
</section>
${report.faults === undefined ? '' : `<section><h2>Faults (game day ${escapeHtml(JSON.stringify(report.run.scenario?.name ?? ''))})</h2><p class="note">Each fault is marked on the charts above: a line at its start, a band while it lasts. Time to heal is from the fault's end (a revoke's: from each device's own loss) to each device's first CONNACK 0 after its loss; a device not back by the end of the run is not healed.</p><table id="table-faults"></table>
<div class="pair"><div><h2>Time to heal (every fault's devices)</h2><div id="chart-heal-latency" class="chart"></div><table id="table-heal-latency"></table></div></div></section>`}
${report.delivery === undefined ? '' : '<section><h2>Messages (backend subscriber)</h2><p class="note">Counted by the device index and sequence each message carries. Lost: accepted by a device and never received; refused: publish() failed, so the application knew.</p><table id="table-delivery"></table></section>'}
<section><h2>Totals</h2><table id="table-summary"></table></section>
<section><h2>Run parameters</h2><table id="table-run"></table></section>
<section><h2>Shards</h2><table id="table-shards"></table></section>
<script>${asset(ASSETS.script)}</script>
<script type="application/json" id="report-data">${scriptJson(pageData(report))}</script>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
}

const PAGE_STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 6px; }
.note { color: #666; margin: 0 0 6px; font-size: 12px; }
.pair { display: flex; flex-wrap: wrap; gap: 24px; } .pair > div { flex: 1 1 480px; min-width: 0; }
table { border-collapse: collapse; margin-top: 8px; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f6f6f6; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.empty { color: #888; font-style: italic; padding: 24px 0; }
.fault { color: #e7298a; font-weight: 600; }
`;

/** The page's own script: draws the charts and tables from the embedded data. Plain ES2017, no dependency but uPlot. */
const PAGE_SCRIPT = `
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var charts = {};
  var COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  /** Faults are marked in this colour on every time chart: a line at the start with its id, a band while it lasts. */
  var FAULT = '#e7298a';
  var dpr = window.devicePixelRatio || 1;
  var faultHooks = {
    drawClear: [function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = 'rgba(231, 41, 138, 0.10)';
      data.faults.forEach(function (f) {
        if (f.start === null) return;
        var x0 = u.valToPos(f.start, 'x', true);
        var x1 = u.valToPos(f.end === null ? f.start : f.end, 'x', true);
        if (x1 > x0) ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
      });
      ctx.restore();
    }],
    draw: [function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = FAULT;
      ctx.fillStyle = FAULT;
      ctx.lineWidth = 2 * dpr;
      ctx.font = Math.round(11 * dpr) + 'px system-ui, sans-serif';
      data.faults.forEach(function (f, i) {
        if (f.start === null) return;
        var x = Math.round(u.valToPos(f.start, 'x', true));
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillText(f.id + ' ' + (f.label || f.kind), x + 3 * dpr, u.bbox.top + (12 + 13 * (i % 4)) * dpr);
      });
      ctx.restore();
    }]
  };
  function width(el) { return Math.max(320, Math.min(1100, el.parentNode.clientWidth || 800)); }
  function text(el, value) { el.textContent = value === null || value === undefined ? 'n/a' : String(value); return el; }
  function row(table, cells, head) {
    var tr = document.createElement('tr');
    cells.forEach(function (cell, i) {
      var td = document.createElement(head ? 'th' : 'td');
      text(td, cell);
      if (!head && i > 0 && typeof cell === 'number') td.className = 'num';
      tr.appendChild(td);
    });
    table.appendChild(tr);
  }
  function timeChart(id, names, columns, yLabel) {
    var el = document.getElementById(id);
    var series = [{}].concat(names.map(function (name, i) {
      // A short run has few seconds: show each as a point, or a one-second run would draw no line at all.
      return { label: name, stroke: COLORS[i % COLORS.length], width: 2, points: { show: data.series.t.length <= 30, size: 7, fill: COLORS[i % COLORS.length] } };
    }));
    charts[id] = new uPlot({
      width: width(el), height: 240, series: series,
      scales: { x: { time: true } },
      axes: [{}, { label: yLabel, size: 60 }],
      legend: { live: true },
      hooks: data.faults.length > 0 ? faultHooks : {}
    }, [data.series.t].concat(columns), el);
  }
  function latencyChart(name) {
    var id = 'chart-' + name + '-latency';
    var el = document.getElementById(id);
    var latency = data.latency[name];
    var table = document.getElementById('table-' + name + '-latency');
    if (!el) return;
    if (latency.count === 0) {
      text(el, name === 'e2e' ? 'No samples: run with --subscribe to measure end-to-end latency.' : name === 'heal' ? 'No samples: no fault knocked a device offline.' : 'No samples: no device connected.').className = 'chart empty';
      return;
    }
    var ticks = [0, 1, 2, 3, 4, 5, 6];
    var tickLabel = { 0: '0%', 1: '90%', 2: '99%', 3: '99.9%', 4: '99.99%', 5: '99.999%', 6: '99.9999%' };
    charts[id] = new uPlot({
      width: width(el), height: 240,
      series: [{ label: 'percentile', value: function (u, v) { return v === null ? '' : (100 * (1 - Math.pow(10, -v))).toPrecision(6) + '%'; } },
               { label: name === 'heal' ? 'time to heal (ms)' : 'latency (ms)', stroke: name === 'heal' ? FAULT : COLORS[name === 'e2e' ? 2 : 0], width: 2, fill: name === 'e2e' ? 'rgba(44,160,44,0.08)' : name === 'heal' ? 'rgba(231,41,138,0.08)' : 'rgba(31,119,180,0.08)', points: { show: false } }],
      scales: { x: { time: false } },
      axes: [{ label: 'percentile', splits: function (u, axis, min, max) { return ticks.filter(function (t) { return t >= min && t <= max; }); },
               values: function (u, splits) { return splits.map(function (s) { return tickLabel[s]; }); } },
             { label: 'ms', size: 60 }]
    }, [latency.curve.nines, latency.curve.valueMs], el);
    row(table, ['percentile', 'latency (ms)'], true);
    latency.table.forEach(function (r) { row(table, [r.percentile === 100 ? 'max' : 'p' + r.percentile, r.valueMs]); });
    row(table, ['mean', latency.meanMs]);
    row(table, ['samples', latency.count]);
  }

  var s = data.series;
  var summary = data.summary;
  var total = function (pick) { return data.faults.reduce(function (n, f) { return n + pick(f); }, 0); };
  var offlineAtStart = total(function (f) { return f.offlineAtStart; });
  var gameDay = data.faults.length === 0 ? '' : '; ' + data.faults.length + ' faults hit ' + total(function (f) { return f.hit; }) + ' devices' +
    (offlineAtStart > 0 ? ' (' + offlineAtStart + ' offline at their start)' : '') + ', ' + total(function (f) { return f.notHealed; }) + ' not healed';
  var delivery = data.delivery ? '; ' + data.delivery.lost + ' lost, ' + (data.delivery.held > 0 ? data.delivery.held + ' held, ' : '') +
    (data.delivery.queued > 0 ? data.delivery.queued + ' queued, ' : '') + (data.delivery.maybeQueued > 0 ? data.delivery.maybeQueued + ' maybe queued, ' : '') + data.delivery.duplicated + ' duplicated' : '';
  text(document.getElementById('headline'), summary.connected + ' of ' + summary.devices + ' devices connected, ' + summary.failedConnects +
    ' failed connects, ' + summary.published + ' published, ' + summary.delivered + ' delivered, ' +
    Object.keys(summary.errors).reduce(function (n, k) { return n + summary.errors[k]; }, 0) + ' errors; ' + (summary.elapsedMs / 1000).toFixed(1) + ' s' + gameDay + delivery);
  timeChart('chart-connected', ['connected'], [s.connected], 'devices');
  timeChart('chart-rates', ['connects/s', 'published/s', 'acked/s', 'delivered/s'], [s.connects, s.published, s.acked, s.delivered], 'per second');
  var codes = Object.keys(s.errors);
  if (codes.length === 0) timeChart('chart-errors', ['errors (none)'], [s.t.map(function () { return 0; })], 'per second');
  else timeChart('chart-errors', codes, codes.map(function (c) { return s.errors[c]; }), 'per second');
  latencyChart('connect');
  latencyChart('e2e');
  latencyChart('heal');

  var faultTable = document.getElementById('table-faults');
  if (faultTable) {
    var t0 = data.series.t.length > 0 ? data.series.t[0] : 0;
    var secs = function (v) { return v === null ? 'n/a' : +(v - t0).toFixed(1); };
    var ms = function (v) { return v === null ? 'n/a' : +(v / 1000).toFixed(2) + ' s'; };
    row(faultTable, ['fault', 'kind', 'started (s)', 'ended (s)', 'aimed at', 'hit', 'offline at its start', 'healed', 'not healed', 'heal p50', 'heal p99', 'heal max', 'messages', 'lost', 'held', 'queued', 'duplicated', 'its own failures'], true);
    data.faults.forEach(function (f) {
      var m = f.messages;
      var failures = Object.keys(f.errors).map(function (k) { return k + ' ' + f.errors[k]; }).join(', ') || 'none';
      row(faultTable, [f.id, f.kind + (f.label ? ' (' + f.label + ')' : ''), secs(f.start), secs(f.end), f.targeted, f.hit, f.offlineAtStart, f.healed, f.notHealed,
        ms(f.healMs.p50), ms(f.healMs.p99), ms(f.healMs.max), m ? m.published : 'n/a', m ? m.lost : 'n/a', m ? m.held : 'n/a', m ? (m.queued || 0) + (m.maybeQueued > 0 ? ' (+' + m.maybeQueued + ' maybe)' : '') : 'n/a', m ? m.duplicated : 'n/a', failures]);
      faultTable.lastChild.firstChild.className = 'fault';
    });
  }
  var deliveryTable = document.getElementById('table-delivery');
  if (deliveryTable && data.delivery) Object.keys(data.delivery).forEach(function (key) { row(deliveryTable, [key, data.delivery[key]]); });

  var totals = document.getElementById('table-summary');
  Object.keys(summary).forEach(function (key) {
    var value = summary[key];
    if (key === 'errors') value = Object.keys(value).length === 0 ? 'none' : Object.keys(value).map(function (k) { return k + ' ' + value[k]; }).join(', ');
    row(totals, [key, value]);
  });
  var run = document.getElementById('table-run');
  Object.keys(data.run).forEach(function (key) {
    var value = data.run[key];
    if (key === 'target') value = value.kind + (value.brokerUrl ? ' ' + value.brokerUrl : '') + (value.instanceId ? ' (' + value.instanceId + ')' : '');
    if (key === 'scenario' && value !== null) value = value.name + ' (' + value.faults.length + ' faults, seed ' + value.seed + ')';
    row(run, [key, value === null ? 'none' : value]);
  });
  var shards = document.getElementById('table-shards');
  row(shards, ['shard', 'devices', 'connected', 'started', 'elapsed (s)', 'peak RSS (MB)', 'host', 'source addresses'], true);
  data.shards.forEach(function (sh) {
    var addresses = sh.localAddresses === null ? 'system' : sh.localAddresses.length > 4 ? sh.localAddresses[0] + ' … ' + sh.localAddresses[sh.localAddresses.length - 1] + ' (' + sh.localAddresses.length + ')' : sh.localAddresses.join(', ');
    row(shards, [sh.index + '/' + sh.count, sh.devices, sh.connected, sh.startedAt, +(sh.elapsedMs / 1000).toFixed(1), sh.peakRssMB, sh.host, addresses]);
  });
  window.simulationReport = { charts: charts, data: data, ready: true };
})();
`;
