/**
 * The emulator's statistics ({@link EmulatorStats}) as Prometheus text (exposition format 0.0.4), served at
 * `GET /metrics` on the OpenAPI port. Written by hand: the emulator does not need prom-client. Names follow the
 * gateway's convention with their own prefix, `apsaramq_emulator_`, so one Grafana dashboard can set the broker's
 * view (connects, CONNACK codes) beside the gateways' (`apsaramq_device_…`).
 */
import type { EmulatorStats } from './stats.js';

/** The Content-Type of Prometheus' text format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** A label value as the text format writes it: backslash, double quote and line feed escaped. */
function labelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A sample value as the exposition format writes it: `+Inf`, `-Inf` and `NaN` by those names. */
function promValue(value: number): string {
  if (Number.isFinite(value)) return String(value);
  return Number.isNaN(value) ? 'NaN' : value > 0 ? '+Inf' : '-Inf';
}

type Sample = readonly [labels: Readonly<Record<string, string>>, value: number];

function family(name: string, type: 'counter' | 'gauge', help: string, samples: readonly Sample[]): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const [labels, value] of samples) {
    const pairs = Object.entries(labels).map(([key, v]) => `${key}="${labelValue(v)}"`);
    lines.push(`${name}${pairs.length > 0 ? `{${pairs.join(',')}}` : ''} ${promValue(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The statistics as Prometheus text. */
export function prometheusText(stats: EmulatorStats): string {
  const { mqtt } = stats;
  const calls: Sample[] = [];
  for (const [action, counts] of Object.entries(stats.actions)) {
    calls.push([{ action, code: 'ok' }, counts.ok]);
    for (const [code, n] of Object.entries(counts.errors)) calls.push([{ action, code }, n]);
  }
  const connacks = Object.entries(mqtt.connacks).map(([code, n]): Sample => [{ code }, n]);
  const accepted = mqtt.connacks['0'] ?? 0;
  return [
    family('apsaramq_emulator_connected_clients', 'gauge', 'MQTT clients connected to the broker now.', [[{}, mqtt.connected]]),
    family('apsaramq_emulator_connects_accepted_total', 'counter', 'CONNECTs the broker accepted (CONNACK 0): its view of the connect rate.', [[{}, accepted]]),
    family('apsaramq_emulator_connacks_total', 'counter', 'CONNACKs sent, by return code (0 accepted; MQTT 5 reason codes as hex).', connacks),
    family('apsaramq_emulator_rule_hits_total', 'counter', "What the broker's rules and guards refused or changed, by rule.", Object.entries(mqtt.rules).map(([rule, n]): Sample => [{ rule }, n])),
    family('apsaramq_emulator_api_calls_total', 'counter', 'OpenAPI calls, by Action and result code (ok, or the error Code).', calls),
    family('apsaramq_emulator_offline_queue_sessions', 'gauge', 'Persistent sessions holding at least one message.', [[{}, mqtt.queues.sessions]]),
    family('apsaramq_emulator_offline_queue_messages', 'gauge', 'Messages held for persistent sessions, all together.', [[{}, mqtt.queues.messages]]),
    family('apsaramq_emulator_offline_queue_bytes', 'gauge', 'Bytes of the messages held for persistent sessions.', [[{}, mqtt.queues.bytes]]),
  ].join('');
}
