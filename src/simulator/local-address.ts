/**
 * Source addresses for simulated devices (`--local-address`), and the check that a fleet fits the address and port
 * space it has: a TCP connection is (source address, source port, broker address, broker port), so toward one broker
 * port each source address offers one connection per ephemeral port, about 28,000 on Linux by default.
 */
import { readFileSync } from 'node:fs';
import { isIP, isIPv4 } from 'node:net';
import { networkInterfaces, platform } from 'node:os';
import { ValidationError } from '../errors.js';
import { SimulatorError } from './errors.js';

/** At most this many source addresses: more would only cost memory (a fleet this size has fewer devices per address than one). */
export const MAX_LOCAL_ADDRESSES = 65_536;

function ipv4ToInt(address: string): number {
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/**
 * Parse a list of source addresses: comma-separated IPv4 or IPv6 addresses and IPv4 ranges, either full
 * (`127.0.0.2-127.0.0.9`) or on the last part (`127.0.0.2-9`). Returns them in order, each once.
 * @throws ValidationError `InvalidOption` naming the bad item
 */
export function parseLocalAddresses(spec: string | readonly string[]): string[] {
  const items = (typeof spec === 'string' ? spec.split(',') : [...spec]).map((item) => item.trim()).filter((item) => item.length > 0);
  const bad = (why: string): ValidationError => new ValidationError('InvalidOption', `Option localAddress (--local-address): ${why}`);
  if (items.length === 0) throw bad('no address given; use e.g. 127.0.0.2-127.0.0.9 or 127.0.0.2,127.0.0.3');
  const out: string[] = [];
  const seen = new Set<string>();
  const add = (address: string): void => {
    if (seen.has(address)) throw bad(`${address} is listed twice`);
    seen.add(address);
    out.push(address);
    if (out.length > MAX_LOCAL_ADDRESSES) throw bad(`more than ${MAX_LOCAL_ADDRESSES} addresses`);
  };
  for (const item of items) {
    if (isIP(item)) {
      add(item);
      continue;
    }
    const range = /^([\d.]+)-([\d.]+)$/.exec(item);
    if (!range) throw bad(`${JSON.stringify(item)} is neither an IP address nor an IPv4 range like 127.0.0.2-127.0.0.9`);
    const from = range[1] as string;
    let to = range[2] as string;
    if (!isIPv4(from)) throw bad(`${JSON.stringify(from)} in ${JSON.stringify(item)} is not an IPv4 address`);
    // 127.0.0.2-9: the end replaces the last parts of the start.
    if (!isIPv4(to) && /^\d+(\.\d+){0,2}$/.test(to)) to = [...from.split('.').slice(0, 4 - to.split('.').length), ...to.split('.')].join('.');
    if (!isIPv4(to)) throw bad(`${JSON.stringify(range[2])} in ${JSON.stringify(item)} is not an IPv4 address`);
    const [low, high] = [ipv4ToInt(from), ipv4ToInt(to)];
    if (high < low) throw bad(`the range ${item} ends before it starts`);
    if (high - low + 1 > MAX_LOCAL_ADDRESSES) throw bad(`the range ${item} holds more than ${MAX_LOCAL_ADDRESSES} addresses`);
    for (let n = low; n <= high; n++) add(intToIpv4(n));
  }
  return out;
}

/** The ephemeral (source) ports the system hands out, from `/proc/sys/net/ipv4/ip_local_port_range`; `undefined` where unknown. */
export interface PortRange {
  low: number;
  high: number;
  /** `high - low + 1`. */
  count: number;
}

/** Read the ephemeral port range (Linux); `undefined` on other systems. */
export function ephemeralPortRange(file = '/proc/sys/net/ipv4/ip_local_port_range'): PortRange | undefined {
  try {
    const [low, high] = readFileSync(file, 'utf8').trim().split(/\s+/).map(Number);
    if (low === undefined || high === undefined || !Number.isInteger(low) || !Number.isInteger(high) || high < low) return undefined;
    return { low, high, count: high - low + 1 };
  } catch {
    return undefined;
  }
}

function isLoopback(address: string): boolean {
  return address === '::1' || (isIPv4(address) && address.startsWith('127.'));
}

/** Is the address configured on this machine? (All of 127.0.0.0/8 is, on Linux, without setup.) */
function isLocalAddress(address: string): boolean {
  if (platform() === 'linux' && isIPv4(address) && address.startsWith('127.')) return true;
  return Object.values(networkInterfaces()).some((list) => (list ?? []).some((i) => i.address === address));
}

/**
 * Check, before anything connects, that `devices` connections to one broker port fit: at most one per ephemeral port
 * and source address. With source addresses, also that each is on this machine and can reach the broker.
 * @throws SimulatorError `AddressSpaceTooSmall` when they do not fit; ValidationError `InvalidOption` for an address
 *   that cannot be used
 */
export function checkAddressSpace(
  devices: number,
  localAddresses: readonly string[] | null,
  broker: { host: string; port: number },
  ports: PortRange | undefined = ephemeralPortRange(),
): void {
  if (localAddresses) {
    for (const address of localAddresses) {
      if (!isLocalAddress(address)) throw new ValidationError('InvalidOption', `Option localAddress (--local-address): ${address} is not an address of this machine`);
    }
    const brokerFamily = isIP(broker.host);
    if (brokerFamily !== 0) {
      const mismatched = localAddresses.find((a) => isIP(a) !== brokerFamily);
      if (mismatched) throw new ValidationError('InvalidOption', `Option localAddress (--local-address): ${mismatched} is not an IPv${brokerFamily} address like the broker ${broker.host}`);
      const stranded = localAddresses.find((a) => isLoopback(a) && !isLoopback(broker.host));
      if (stranded) throw new ValidationError('InvalidOption', `Option localAddress (--local-address): the loopback address ${stranded} cannot reach the broker ${broker.host}`);
    }
  }
  if (!ports) return;
  const sources = localAddresses?.length ?? 1;
  const perSource = Math.ceil(devices / sources);
  if (perSource <= ports.count) return;
  const where = `${ports.count} ephemeral ports (${ports.low}-${ports.high}, /proc/sys/net/ipv4/ip_local_port_range)`;
  const needed = Math.ceil(devices / ports.count);
  const what = localAddresses
    ? `${devices} devices over ${sources} source address${sources === 1 ? '' : 'es'} make ${perSource} connections per address toward ${broker.host}:${broker.port}, but each address has only ${where}`
    : `${devices} devices from one source address toward ${broker.host}:${broker.port} need ${devices} source ports, but there are only ${where}`;
  throw new SimulatorError('AddressSpaceTooSmall', `${what}: use at least ${needed} source addresses (--local-address)`);
}
