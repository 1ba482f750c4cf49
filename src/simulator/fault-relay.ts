/**
 * The fault relay of a game day: a TCP relay in this process between devices and the broker, so network faults need
 * no root and no iptables. Devices are routed by listener: each group of devices that the scenario's network faults
 * hit alike gets its own port, so a fault cuts exactly its devices. A group can be partitioned (its connections
 * reset, new ones reset as they arrive), slowed (latency added each way) or throttled (bytes per second each way),
 * by several faults at once: partitions add up, latencies add up, the lowest bandwidth wins.
 *
 * Bytes are relayed as they are (TLS passes through). The relay is a device's network, not the broker: the backend
 * subscriber that counts deliveries connects to the broker directly.
 */
import { type AddressInfo, type Server, type Socket, connect as netConnect, createServer } from 'node:net';

/** Where a group's devices connect. */
export interface RelayAddress {
  readonly host: string;
  readonly port: number;
}

/** What a fault does to the network of its groups. */
export type NetworkEffect = { readonly kind: 'partition' } | { readonly kind: 'latency'; readonly ms: number } | { readonly kind: 'bandwidth'; readonly bytesPerSec: number };

/** Counts of what the relay did, for the report. */
export interface RelayStats {
  /** Connections it relayed (accepted and connected upstream). */
  relayed: number;
  /** Live connections it reset when a partition began. */
  dropped: number;
  /** New connections it reset because their group was partitioned. */
  refused: number;
}

/** Bytes queued in one direction of a connection before the sending side is paused. */
const HIGH_WATER = 1024 * 1024;
/** Smallest slice a throttled direction sends, as a share of a second's bytes: 20 slices a second at most. */
const SLICES_PER_SECOND = 20;

interface Group {
  readonly index: number;
  readonly server: Server;
  readonly pipes: Set<Pipe>;
  readonly partitions: Set<string>;
  readonly latency: Map<string, number>;
  readonly bandwidth: Map<string, number>;
}

function latencyOf(group: Group): number {
  let total = 0;
  for (const ms of group.latency.values()) total += ms;
  return total;
}

function bandwidthOf(group: Group): number | undefined {
  let lowest: number | undefined;
  for (const rate of group.bandwidth.values()) lowest = lowest === undefined ? rate : Math.min(lowest, rate);
  return lowest;
}

/** One direction of a relayed connection: delays and paces chunks as the group's faults say, in order. */
class Shaper {
  readonly #from: Socket;
  readonly #to: Socket;
  readonly #group: Group;
  readonly #queue: Array<{ chunk: Buffer; at: number }> = [];
  #bytes = 0;
  #lastAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #tokens = 0;
  #refilledAt = 0;
  #paused = false;

  constructor(from: Socket, to: Socket, group: Group) {
    this.#from = from;
    this.#to = to;
    this.#group = group;
    to.on('drain', () => this.#flush());
  }

  push(chunk: Buffer): void {
    const latency = latencyOf(this.#group);
    const bandwidth = bandwidthOf(this.#group);
    if (this.#queue.length === 0 && latency === 0 && bandwidth === undefined) {
      if (!this.#to.write(chunk)) this.#pause();
      return;
    }
    const now = performance.now();
    const at = Math.max(now + latency, this.#lastAt);
    this.#lastAt = at;
    this.#queue.push({ chunk, at });
    this.#bytes += chunk.length;
    if (this.#bytes > HIGH_WATER) this.#pause();
    this.#flush();
  }

  #pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#from.pause();
  }

  #resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#from.resume();
  }

  #flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#to.destroyed) return;
    if (this.#to.writableNeedDrain) return; // 'drain' calls again
    const now = performance.now();
    while (this.#queue.length > 0) {
      const head = this.#queue[0] as { chunk: Buffer; at: number };
      if (head.at > now) {
        this.#timer = setTimeout(() => this.#flush(), Math.ceil(head.at - now));
        return;
      }
      let chunk = head.chunk;
      const rate = bandwidthOf(this.#group);
      if (rate !== undefined) {
        this.#tokens = Math.min(rate, this.#tokens + ((now - this.#refilledAt) * rate) / 1_000);
        this.#refilledAt = now;
        const slice = Math.min(chunk.length, Math.max(1, Math.floor(rate / SLICES_PER_SECOND)));
        if (this.#tokens < slice) {
          this.#timer = setTimeout(() => this.#flush(), Math.ceil(((slice - this.#tokens) * 1_000) / rate));
          return;
        }
        const take = Math.min(chunk.length, Math.floor(this.#tokens));
        this.#tokens -= take;
        if (take < chunk.length) {
          head.chunk = chunk.subarray(take);
          chunk = chunk.subarray(0, take);
        } else {
          this.#queue.shift();
        }
      } else {
        this.#queue.shift();
      }
      this.#bytes -= chunk.length;
      const more = this.#to.write(chunk);
      if (!more) break;
    }
    if (this.#bytes <= HIGH_WATER / 2 && !this.#to.writableNeedDrain) this.#resume();
  }

  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.length = 0;
    this.#bytes = 0;
  }
}

/** A device's connection and its connection to the broker. */
class Pipe {
  readonly #down: Socket;
  readonly #up: Socket;
  readonly #shapers: Shaper[] = [];

  constructor(down: Socket, up: Socket, group: Group) {
    this.#down = down;
    this.#up = up;
    const uplink = new Shaper(down, up, group);
    const downlink = new Shaper(up, down, group);
    this.#shapers.push(uplink, downlink);
    down.on('data', (chunk: Buffer) => uplink.push(chunk));
    up.on('data', (chunk: Buffer) => downlink.push(chunk));
  }

  /** Close both sides: `reset` sends the device a TCP RST (a cut network), else a FIN follows the peer's. */
  close(reset: boolean): void {
    for (const shaper of this.#shapers) shaper.close();
    if (reset) {
      if (!this.#down.destroyed) this.#down.resetAndDestroy();
      if (!this.#up.destroyed) this.#up.destroy();
    } else {
      this.#down.destroy();
      this.#up.destroy();
    }
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/**
 * A running relay with `groups` listeners on 127.0.0.1, all toward `upstream`. Listeners and live connections end
 * with {@link FaultRelay.close}.
 */
export class FaultRelay {
  readonly #groups: Group[];
  readonly #upstream: RelayAddress;
  readonly #ports: number[];
  readonly stats: RelayStats = { relayed: 0, dropped: 0, refused: 0 };
  #closed = false;

  private constructor(upstream: RelayAddress, groups: Group[], ports: number[]) {
    this.#upstream = upstream;
    this.#groups = groups;
    this.#ports = ports;
  }

  /** Start `groups` listeners (ports chosen by the system) relaying to `upstream`. */
  static async start(upstream: RelayAddress, groups: number): Promise<FaultRelay> {
    const made: Group[] = [];
    const ports: number[] = [];
    let relay: FaultRelay | undefined;
    try {
      for (let index = 0; index < groups; index++) {
        const group: Group = { index, server: createServer({ noDelay: true }), pipes: new Set(), partitions: new Set(), latency: new Map(), bandwidth: new Map() };
        group.server.on('connection', (socket) => relay?.accept(group, socket));
        made.push(group);
        await new Promise<void>((resolve, reject) => {
          group.server.once('error', reject);
          // A backlog as deep as the broker's: a fleet connects through here at once.
          group.server.listen({ host: '127.0.0.1', port: 0, backlog: 4_096 }, () => {
            group.server.off('error', reject);
            resolve();
          });
        });
        ports.push((group.server.address() as AddressInfo).port);
      }
    } catch (error) {
      await Promise.all(made.map((g) => new Promise((resolve) => g.server.close(resolve))));
      throw error;
    }
    relay = new FaultRelay(upstream, made, ports);
    return relay;
  }

  /** Where the devices of `group` connect. */
  address(group: number): RelayAddress {
    const port = this.#ports[group];
    if (port === undefined) throw new RangeError(`The relay has no group ${group}`);
    return { host: '127.0.0.1', port };
  }

  /** Live relayed connections of a group. */
  connections(group: number): number {
    return this.#groups[group]?.pipes.size ?? 0;
  }

  /** Start fault `id`'s effect on `groups`; a partition resets their live connections at once. */
  apply(id: string, groups: Iterable<number>, effect: NetworkEffect): void {
    for (const index of groups) {
      const group = this.#groups[index];
      if (!group) continue;
      if (effect.kind === 'partition') {
        group.partitions.add(id);
        for (const pipe of group.pipes) pipe.close(true);
        this.stats.dropped += group.pipes.size;
        group.pipes.clear();
      } else if (effect.kind === 'latency') {
        group.latency.set(id, effect.ms);
      } else {
        group.bandwidth.set(id, effect.bytesPerSec);
      }
    }
  }

  /** End fault `id`'s effect on `groups`. */
  lift(id: string, groups: Iterable<number>): void {
    for (const index of groups) {
      const group = this.#groups[index];
      if (!group) continue;
      group.partitions.delete(id);
      group.latency.delete(id);
      group.bandwidth.delete(id);
    }
  }

  /** @internal the listener's connection handler. */
  accept(group: Group, down: Socket): void {
    if (this.#closed || group.partitions.size > 0) {
      if (group.partitions.size > 0) this.stats.refused += 1;
      down.on('error', () => undefined);
      down.resetAndDestroy();
      return;
    }
    down.pause();
    down.setNoDelay(true);
    // The device's own source address toward a loopback broker too, so --local-address spreads the relay's
    // connections over the same source ports as it would the devices'.
    const from = down.remoteAddress;
    const local = from !== undefined && isLoopback(this.#upstream.host) && /^127\./.test(from) ? { localAddress: from } : {};
    const up = netConnect({ host: this.#upstream.host, port: this.#upstream.port, noDelay: true, ...local });
    up.pause();
    let pipe: Pipe | undefined;
    const end = (): void => {
      if (pipe) {
        group.pipes.delete(pipe);
        pipe.close(false);
        pipe = undefined;
      } else {
        down.destroy();
        up.destroy();
      }
    };
    down.on('error', () => undefined);
    up.on('error', () => undefined);
    down.once('close', end);
    up.once('close', end);
    up.once('connect', () => {
      if (down.destroyed || up.destroyed) return;
      if (group.partitions.size > 0) {
        // Partitioned while its upstream was connecting.
        this.stats.refused += 1;
        down.resetAndDestroy();
        up.destroy();
        return;
      }
      pipe = new Pipe(down, up, group);
      group.pipes.add(pipe);
      this.stats.relayed += 1;
      down.resume();
      up.resume();
    });
  }

  /** Stop listening and close every relayed connection. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const group of this.#groups) {
      for (const pipe of group.pipes) pipe.close(false);
      group.pipes.clear();
    }
    await Promise.all(this.#groups.map((g) => new Promise((resolve) => g.server.close(resolve))));
  }
}
