/**
 * A gateway's Prometheus metrics through prom-client, an optional peer dependency imported here only (by
 * {@link Gateway.metrics}): a device that does not ask for metrics installs and loads nothing more. Names follow
 * Prometheus' conventions so that Grafana's defaults fit: the `apsaramq_device_` prefix, base units (seconds,
 * bytes), `_total` on counters, one metric per quantity with its variants as labels (README, "Gateways").
 *
 * Gauges and counters are read from the gateway's own counts at each scrape (`collect`), so a registry made late
 * still counts from the gateway's start; the two histograms observe from the moment metrics are asked for.
 */
import { ConfigurationError } from '../errors.js';
import { type Gateway, OBSERVE_DELIVERY } from './gateway.js';

/** What a registry of prom-client is to this module (its own types are not named: prom-client is optional). */
export interface MetricsRegistry {
  /** The exposition text of every metric registered. */
  metrics(): Promise<string>;
  /** The Content-Type of that text. */
  readonly contentType: string;
}

/** Options of {@link Gateway.metrics}. */
export interface GatewayMetricsOptions {
  /** A prom-client `Registry` to register into (e.g. `register`, prom-client's default one, beside your own metrics). @default a new Registry */
  readonly registry?: MetricsRegistry;
  /** Labels on every metric, e.g. `{ gateway: 'line-3' }` when one Prometheus scrapes several gateways. */
  readonly labels?: Readonly<Record<string, string>>;
  /** Buckets of the connect latency histogram, seconds. @default 0.005 to 10 */
  readonly connectBuckets?: readonly number[];
  /** Buckets of the delivery latency histogram, seconds. @default 0.005 to 300 */
  readonly deliveryBuckets?: readonly number[];
}

/** A gateway's metrics: the registry they are in, and its text. */
export interface GatewayMetrics {
  /** The prom-client `Registry` holding them (the one given, or a new one). */
  readonly registry: MetricsRegistry;
  /** The Content-Type of {@link GatewayMetrics.text} (Prometheus text format 0.0.4). */
  readonly contentType: string;
  /** The exposition text, what a `/metrics` endpoint answers. */
  text(): Promise<string>;
}

type PromClient = typeof import('prom-client');

/** The metric names, for the README's table and the tests. */
export const GATEWAY_METRIC_NAMES = Object.freeze([
  'apsaramq_device_devices',
  'apsaramq_device_connect_queue',
  'apsaramq_device_connects_total',
  'apsaramq_device_reconnects_total',
  'apsaramq_device_publishes_accepted_total',
  'apsaramq_device_publishes_delivered_total',
  'apsaramq_device_publishes_dropped_total',
  'apsaramq_device_outbox_messages',
  'apsaramq_device_outbox_bytes',
  'apsaramq_device_connect_duration_seconds',
  'apsaramq_device_delivery_duration_seconds',
] as const);

const CONNECT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const DELIVERY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

async function loadPromClient(): Promise<PromClient> {
  try {
    const loaded = (await import('prom-client')) as PromClient & { default?: PromClient };
    return typeof loaded.Registry === 'function' ? loaded : (loaded.default as PromClient);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new ConfigurationError(
        'MissingDependency',
        'Gateway metrics need the package prom-client, which is not installed (an optional peer dependency of apsaramq-device): npm install prom-client',
        'Install prom-client next to apsaramq-device (npm install prom-client), or do not ask for metrics (--metrics-port, gateway.metrics()).',
      );
    }
    throw error;
  }
}

/** Make the gateway's metrics in a registry. Called once per gateway, by {@link Gateway.metrics}. @internal */
export async function createGatewayMetrics(gateway: Gateway, options: GatewayMetricsOptions): Promise<GatewayMetrics> {
  const prom = await loadPromClient();
  const registry = (options.registry ?? new prom.Registry()) as InstanceType<PromClient['Registry']>;
  if (options.labels) registry.setDefaultLabels({ ...options.labels });
  const registers = [registry];
  const outcomes = ['accepted', 'refused', 'failed'] as const;

  new prom.Gauge({
    name: 'apsaramq_device_devices',
    help: 'Devices held by the gateway, by state (connecting, online, backing_off, failed).',
    labelNames: ['state'],
    registers,
    collect() {
      const { states } = gateway.counts;
      this.set({ state: 'connecting' }, states.connecting);
      this.set({ state: 'online' }, states.online);
      this.set({ state: 'backing_off' }, states['backing-off']);
      this.set({ state: 'failed' }, states.failed);
    },
  });
  new prom.Gauge({
    name: 'apsaramq_device_connect_queue',
    help: 'Devices waiting for their connect slot (the gateway paces its CONNECTs).',
    registers,
    collect() {
      this.set(gateway.counts.waitingToConnect);
    },
  });
  for (const [name, key, help] of [
    ['apsaramq_device_connects_total', 'connects', 'First CONNECTs of a device (until it was online once), by outcome (accepted, refused, failed).'],
    ['apsaramq_device_reconnects_total', 'reconnects', 'CONNECTs of a device that was online before, by outcome (accepted, refused, failed).'],
  ] as const) {
    new prom.Counter({
      name,
      help,
      labelNames: ['outcome'],
      registers,
      collect() {
        const counts = gateway.counts[key];
        this.reset();
        for (const outcome of outcomes) this.inc({ outcome }, counts[outcome]);
      },
    });
  }
  for (const [name, help, read] of [
    ['apsaramq_device_publishes_accepted_total', 'Messages accepted into the durable outbox (on disk) through the gateway.', () => gateway.counts.accepted],
    ['apsaramq_device_publishes_delivered_total', 'Messages delivered (PUBACK), also those accepted before a restart.', () => gateway.counts.delivered],
  ] as const) {
    new prom.Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }
  new prom.Counter({
    name: 'apsaramq_device_publishes_dropped_total',
    help: 'Messages that left the outbox undelivered, by reason (full, expired, corrupt, rejected).',
    labelNames: ['reason'],
    registers,
    collect() {
      const { dropped } = gateway.counts;
      this.reset();
      for (const reason of ['full', 'expired', 'corrupt', 'rejected'] as const) this.inc({ reason }, dropped[reason]);
    },
  });
  new prom.Gauge({
    name: 'apsaramq_device_outbox_messages',
    help: 'Messages waiting in the durable outbox (accepted, not yet delivered or dropped).',
    registers,
    collect() {
      this.set(gateway.counts.outbox.messages);
    },
  });
  new prom.Gauge({
    name: 'apsaramq_device_outbox_bytes',
    help: 'Bytes of the messages waiting in the durable outbox.',
    registers,
    collect() {
      this.set(gateway.counts.outbox.bytes);
    },
  });
  const connectDuration = new prom.Histogram({
    name: 'apsaramq_device_connect_duration_seconds',
    help: 'From a CONNECT getting its slot to its answer, by outcome (accepted, refused, failed) and kind (first, reconnect).',
    labelNames: ['outcome', 'kind'],
    buckets: [...(options.connectBuckets ?? CONNECT_BUCKETS)],
    registers,
  });
  const deliveryDuration = new prom.Histogram({
    name: 'apsaramq_device_delivery_duration_seconds',
    help: 'From a message accepted (on disk) to its PUBACK, for messages accepted in this run.',
    buckets: [...(options.deliveryBuckets ?? DELIVERY_BUCKETS)],
    registers,
  });
  gateway.on('connect', ({ outcome, reconnect, durationMs }) => connectDuration.observe({ outcome, kind: reconnect ? 'reconnect' : 'first' }, durationMs / 1000));
  gateway[OBSERVE_DELIVERY]((seconds) => deliveryDuration.observe(seconds));
  return {
    registry,
    contentType: registry.contentType,
    text: () => registry.metrics(),
  };
}
