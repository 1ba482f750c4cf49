/**
 * The HTML report: one self-contained file (uPlot and its stylesheet inlined, the data embedded, no request leaves
 * the page) with the run's parameters, connected devices and rates over time, errors over time, and the connect and
 * end-to-end latency distributions with their percentiles.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Histogram, percentileCurve, percentileTable } from './histogram.js';
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
    latency: { connect: latencyData(histograms.connectLatencyUs), e2e: latencyData(histograms.e2eLatencyUs) },
  };
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
`;

/** The page's own script: draws the charts and tables from the embedded data. Plain ES2017, no dependency but uPlot. */
const PAGE_SCRIPT = `
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var charts = {};
  var COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
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
      legend: { live: true }
    }, [data.series.t].concat(columns), el);
  }
  function latencyChart(name) {
    var id = 'chart-' + name + '-latency';
    var el = document.getElementById(id);
    var latency = data.latency[name];
    var table = document.getElementById('table-' + name + '-latency');
    if (latency.count === 0) {
      text(el, name === 'e2e' ? 'No samples: run with --subscribe to measure end-to-end latency.' : 'No samples: no device connected.').className = 'chart empty';
      return;
    }
    var ticks = [0, 1, 2, 3, 4, 5, 6];
    var tickLabel = { 0: '0%', 1: '90%', 2: '99%', 3: '99.9%', 4: '99.99%', 5: '99.999%', 6: '99.9999%' };
    charts[id] = new uPlot({
      width: width(el), height: 240,
      series: [{ label: 'percentile', value: function (u, v) { return v === null ? '' : (100 * (1 - Math.pow(10, -v))).toPrecision(6) + '%'; } },
               { label: 'latency (ms)', stroke: COLORS[name === 'e2e' ? 2 : 0], width: 2, fill: name === 'e2e' ? 'rgba(44,160,44,0.08)' : 'rgba(31,119,180,0.08)', points: { show: false } }],
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
  text(document.getElementById('headline'), summary.connected + ' of ' + summary.devices + ' devices connected, ' + summary.failedConnects +
    ' failed connects, ' + summary.published + ' published, ' + summary.delivered + ' delivered, ' +
    Object.keys(summary.errors).reduce(function (n, k) { return n + summary.errors[k]; }, 0) + ' errors; ' + (summary.elapsedMs / 1000).toFixed(1) + ' s');
  timeChart('chart-connected', ['connected'], [s.connected], 'devices');
  timeChart('chart-rates', ['connects/s', 'published/s', 'acked/s', 'delivered/s'], [s.connects, s.published, s.acked, s.delivered], 'per second');
  var codes = Object.keys(s.errors);
  if (codes.length === 0) timeChart('chart-errors', ['errors (none)'], [s.t.map(function () { return 0; })], 'per second');
  else timeChart('chart-errors', codes, codes.map(function (c) { return s.errors[c]; }), 'per second');
  latencyChart('connect');
  latencyChart('e2e');

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
