/**
 * `emulator --cluster N`: N emulator processes on this machine, one logical service on one Redis (the user's
 * `--redis`, or a redis-server started for the cluster on a free port, without persistence). Each process is this
 * CLI's own `emulator --redis … --json` with the user's other flags; each listens on ports of its own (the given ones
 * plus its index, else free ones) and all are printed together. Ctrl+C (SIGINT, SIGTERM) stops every process, then
 * the redis-server it started; a process whose parent dies sees its stdin close and stops by itself.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { shownRedisUrl } from '../emulator/cluster/redis.js';
import { EmulatorStateError } from '../errors.js';
import { type CliIo, UsageError, jsonLine } from './io.js';

/** Set in a cluster process's environment: its stdin closing (its parent gone) stops it. */
export const CLUSTER_CHILD_ENV = 'APSARAMQ_DEVICE_CLUSTER_PROCESS';

/** The flags of `emulator` that the parent decides for each process, with whether they take a value. */
const PARENT_FLAGS: ReadonlyMap<string, boolean> = new Map([
  ['--cluster', true], ['--redis', true], ['--json', false], ['--mqtt-port', true], ['--ws-port', true], ['--api-port', true], ['--tls-port', true], ['--wss-port', true],
]);

/** A process stopped with SIGTERM that has not exited after this long is killed. */
const STOP_GRACE_MS = 15_000;

/** What `emulator --cluster` needs from the command line. */
export interface ClusterRun {
  readonly processes: number;
  /** `--redis`, or undefined to start a redis-server. */
  readonly redis: string | undefined;
  /** The command line after `emulator` as the user typed it (the flags every process gets, once the parent's are out). */
  readonly rawArgs: readonly string[];
  /** Arguments before `emulator` (the program's own, e.g. --verbose). */
  readonly globalArgs: readonly string[];
  /** The ports given explicitly (a process listens on port + its index); absent: each takes a free one. */
  readonly ports: Readonly<Partial<Record<'mqtt' | 'ws' | 'api' | 'tls' | 'wss', number>>>;
  /** TLS is on (--tls-cert): the TLS and secure WebSocket ports are the processes' too. */
  readonly tls: boolean;
  readonly json: boolean;
  readonly io: CliIo;
}

/** The `--json` line of one process (emulator.ts's readyLine). */
interface ProcessLine {
  mqttUrl: string;
  wsUrl: string | null;
  mqttsUrl?: string;
  wssUrl?: string | null;
  apiEndpoint: string;
  instanceId: string;
  accessKeyId: string;
  accessKeySecret: string | null;
  accessKeySource?: string;
  cluster?: { processId: string; redisUrl: string };
}

/** The user's flags without those the parent sets per process. */
export function processArgs(rawArgs: readonly string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i] as string;
    const name = arg.includes('=') ? arg.slice(0, arg.indexOf('=')) : arg;
    const takesValue = PARENT_FLAGS.get(name);
    if (takesValue === undefined) {
      kept.push(arg);
      continue;
    }
    if (takesValue && !arg.includes('=')) i++;
  }
  return kept;
}

/** This CLI's executable script (this module is dist/cli/emulator-cluster.js; the bin is beside it). */
function cliScript(): string {
  return fileURLToPath(new URL('./bin.js', import.meta.url));
}

/** redis-server on the PATH (or Debian's /usr/bin), else undefined. */
export function redisServerPath(env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env['PATH'] ?? '').split(':').concat('/usr/bin', '/usr/sbin')) {
    if (dir && statSync(join(dir, 'redis-server'), { throwIfNoEntry: false })?.isFile()) return join(dir, 'redis-server');
  }
  return undefined;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A redis-server of the cluster's own. */
interface OwnRedis {
  readonly url: string;
  readonly child: ChildProcess;
}

/**
 * redis-server under a shell that stops it when its standard input ends: when the cluster stops it (it closes that
 * input), and when the cluster's process dies, even by SIGKILL, so that no redis-server outlives its cluster. (A
 * background job of a shell reads /dev/null unless told otherwise: the watcher reads the input kept on fd 3.)
 */
const WATCHED = 'exec 3<&0; server=$1; shift; "$server" "$@" </dev/null & pid=$!; (cat <&3 >/dev/null; kill $pid 2>/dev/null) & wait $pid';

/**
 * Start redis-server on 127.0.0.1 on a port that was free a moment ago (it cannot pick one itself), saving nothing.
 * Resolves once it accepts connections (its own log line says so; nothing polls its port).
 */
async function startRedisServer(path: string): Promise<OwnRedis> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn('/bin/sh', ['-c', WATCHED, 'sh', path, '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let log = '';
    const ready = await new Promise<boolean>((resolve) => {
      child.once('exit', () => resolve(false));
      child.once('error', (error) => {
        log += error.message;
        resolve(false);
      });
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (log.length < 4_000) log += `${line}\n`;
        if (/Ready to accept connections/.test(line)) resolve(true);
      });
    });
    if (ready) {
      child.stdout?.resume();
      child.stderr?.resume();
      return { url: `redis://127.0.0.1:${port}`, child };
    }
    // Let its watcher go too.
    child.stdin?.end();
    // Another process took the port between the check and the bind: another one.
    if (attempt < 3 && /Address already in use/.test(log)) continue;
    throw new EmulatorStateError('EmulatorClusterUnavailable', `redis-server (${path}) did not start: ${log.trim().split('\n').slice(-3).join(' ')}`, path);
  }
}

/**
 * Stop a process and wait for it: SIGTERM (or, for the watched redis-server, the end of its input), then SIGKILL to
 * its whole process group after the grace.
 */
async function stopProcess(child: ChildProcess, how: 'signal' | 'input' = 'signal'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  if (how === 'input') child.stdin?.end();
  else child.kill('SIGTERM');
  const timer = setTimeout(() => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  }, STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

interface Member {
  readonly index: number;
  readonly child: ChildProcess;
  line: ProcessLine | undefined;
  stderr: string;
  exited: boolean;
}

/** Run the cluster until interrupted; every process and the redis-server it started are stopped before it returns. */
export async function runCluster(run: ClusterRun): Promise<void> {
  const { io } = run;
  let own: OwnRedis | undefined;
  if (run.redis === undefined) {
    const path = redisServerPath(io.env);
    if (path === undefined) throw new UsageError('--cluster needs a Redis: pass --redis redis://host:6379, or install redis-server (apt-get install redis-server) so that one is started for the cluster');
    own = await startRedisServer(path);
  }
  const redisUrl = run.redis ?? (own as OwnRedis).url;
  const members: Member[] = [];
  const stopping = { now: false };
  try {
    const args = processArgs(run.rawArgs);
    // TLS ports exist only with TLS on (the process refuses them otherwise).
    const listeners = run.tls ? (['mqtt', 'ws', 'api', 'tls', 'wss'] as const) : (['mqtt', 'ws', 'api'] as const);
    for (let index = 0; index < run.processes; index++) {
      const ports = listeners.flatMap((name) => [`--${name}-port`, String(run.ports[name] === undefined ? 0 : (run.ports[name] as number) + index)]);
      const child = spawn(process.execPath, [cliScript(), ...run.globalArgs, 'emulator', ...args, '--redis', redisUrl, '--json', ...ports], {
        env: { ...io.env, [CLUSTER_CHILD_ENV]: '1' },
        stdio: ['pipe', 'pipe', 'pipe'],
        // Its own process group: a Ctrl+C reaches the parent alone, which stops every process once.
        detached: true,
      });
      members.push({ index, child, line: undefined, stderr: '', exited: false });
    }
    const lines = members.map((member) => new Promise<ProcessLine>((resolve, reject) => {
      const { child } = member;
      createInterface({ input: child.stderr! }).on('line', (line) => {
        member.stderr = `${member.stderr}${line}\n`.slice(-4_000);
        // The rule refusals and errors of each process, told apart by its index.
        if (member.line !== undefined) io.stderr(`[${member.index + 1}] ${line}\n`);
      });
      const stdout = createInterface({ input: child.stdout! });
      stdout.once('line', (line) => {
        try {
          member.line = JSON.parse(line) as ProcessLine;
          resolve(member.line);
        } catch {
          reject(new Error(`emulator process ${member.index + 1} printed ${line.slice(0, 200)}`));
        }
      });
      child.once('exit', (code, signal) => {
        member.exited = true;
        if (member.line === undefined) {
          reject(new Error(`emulator process ${member.index + 1} exited with ${signal ?? code} before it was ready${member.stderr ? `: ${member.stderr.trim()}` : ''}`));
        } else if (!stopping.now) {
          io.stderr(`emulator --cluster: process ${member.index + 1} (pid ${child.pid ?? '?'}) exited with ${signal ?? code}; the other processes keep serving\n`);
        }
      });
      child.once('error', (error) => reject(error));
    }));
    const stopped = io.interrupted();
    const ready = await Promise.race([Promise.all(lines), stopped.then(() => undefined)]);
    if (ready === undefined) return;
    io.stdout(run.json ? jsonLine(clusterLine(ready, redisUrl, own !== undefined)) : clusterBanner(ready, redisUrl, own !== undefined, members));
    await stopped;
  } finally {
    stopping.now = true;
    await Promise.all(members.map((member) => stopProcess(member.child)));
    if (own) await stopProcess(own.child, 'input');
  }
}

/** The `--json` line: the account once, every process's endpoints. */
function clusterLine(lines: readonly ProcessLine[], redisUrl: string, started: boolean): Record<string, unknown> {
  const first = lines[0] as ProcessLine;
  return {
    redisUrl: shownRedisUrl(redisUrl),
    redisStarted: started,
    instanceId: first.instanceId,
    accessKeyId: first.accessKeyId,
    accessKeySecret: first.accessKeySecret,
    ...(first.accessKeySource === undefined ? {} : { accessKeySource: first.accessKeySource }),
    processes: lines.map((line) => ({
      processId: line.cluster?.processId ?? null,
      mqttUrl: line.mqttUrl,
      wsUrl: line.wsUrl,
      ...(line.mqttsUrl === undefined ? {} : { mqttsUrl: line.mqttsUrl, wssUrl: line.wssUrl ?? null }),
      apiEndpoint: line.apiEndpoint,
    })),
  };
}

function clusterBanner(lines: readonly ProcessLine[], redisUrl: string, started: boolean, members: readonly Member[]): string {
  const first = lines[0] as ProcessLine;
  const rows = lines.map((line, i) => `  [${i + 1}] pid ${members[i]?.child.pid ?? '?'}  MQTT ${line.mqttUrl}  OpenAPI ${line.apiEndpoint}${line.wsUrl ? `  WebSocket ${line.wsUrl}` : ''}${line.mqttsUrl ? `  TLS ${line.mqttsUrl}` : ''}`);
  return [
    `ApsaraMQ for MQTT emulator cluster is running: ${lines.length} processes, one service.`,
    `  Redis:            ${shownRedisUrl(redisUrl)}${started ? ' (started for the cluster, stopped with it; nothing is saved)' : ''}`,
    `  Instance id:      ${first.instanceId}`,
    ...rows,
    '',
    'Any process\'s OpenAPI serves the whole cluster, and a device may connect to any MQTT port:',
    ...(first.accessKeySecret !== null
      ? [`  export ALIBABA_CLOUD_ACCESS_KEY_ID=${first.accessKeyId}`, `  export ALIBABA_CLOUD_ACCESS_KEY_SECRET=${first.accessKeySecret}`]
      : ['  (use the same ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET as this terminal)']),
    `  apsaramq-device connect --endpoint ${first.apiEndpoint} --broker-url ${first.mqttUrl} --instance-id ${first.instanceId} --client-id GID_demo@@@dev-1 --subscribe 'demo/#'`,
    `  apsaramq-device connect --endpoint ${(lines[lines.length - 1] as ProcessLine).apiEndpoint} --broker-url ${(lines[lines.length - 1] as ProcessLine).mqttUrl} --instance-id ${first.instanceId} --client-id GID_demo@@@dev-2 --publish demo/hello --message hi`,
    '',
    'Press Ctrl+C to stop every process.',
    '',
  ].join('\n');
}
