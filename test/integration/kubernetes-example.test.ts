/**
 * examples/kubernetes as it would run: every manifest parses; every command line in it is this CLI's, with its real
 * flags (parsed by the CLI's own commander program, values included); and the command lines run here, the Kubernetes
 * way (`$(VAR)` expanded from the container's ConfigMaps and Secret): the emulator Deployment's as two `emulator
 * --redis` processes on a test Redis, the Indexed Job's with JOB_COMPLETION_INDEX 0 to N-1, all at once, and the
 * merge Job's scripts on the reports they wrote. Only the ConfigMaps' values that name places are replaced (Redis,
 * ports, endpoints, directories) and the fleet made small.
 */
import { spawn } from 'node:child_process';
import { chmod, readFile, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { CLI_BIN, spawnCli, tempDir } from '../helpers/cli.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';

const DIR = resolve(import.meta.dirname, '../../examples/kubernetes');
const { available, skipped } = redisAvailable();

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
}
interface Manifest {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    completionMode?: string;
    completions?: number;
    parallelism?: number;
    template?: { spec?: { containers?: Container[]; initContainers?: Container[] } };
  };
}

async function manifests(): Promise<Manifest[]> {
  const all: Manifest[] = [];
  for (const file of (await readdir(DIR)).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(await readFile(join(DIR, file), 'utf8'))) {
      expect(doc.errors, file).toEqual([]);
      all.push(doc.toJS() as Manifest);
    }
  }
  return all;
}

function find(all: readonly Manifest[], kind: string, name: string): Manifest {
  const found = all.find((m) => m.kind === kind && m.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in examples/kubernetes`);
  return found;
}

/** A container's environment as Kubernetes builds it from its envFrom (ConfigMaps' data, Secrets' stringData). */
function environment(all: readonly Manifest[], container: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef) Object.assign(env, find(all, 'ConfigMap', source.configMapRef.name).data);
    if (source.secretRef) Object.assign(env, find(all, 'Secret', source.secretRef.name).stringData);
  }
  return env;
}

/** Kubernetes' `$(VAR)` expansion of command and args; a variable the container does not have is a mistake here. */
function expand(args: readonly string[], env: Readonly<Record<string, string>>): string[] {
  return args.map((arg) => arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
    const value = env[name];
    if (value === undefined) throw new Error(`$(${name}) is not in the container's environment`);
    return value;
  }));
}

/** The CLI's own command for `words` (`simulate`, `report merge`), and the flags after them. */
function commandOf(words: readonly string[]): { command: Command; flags: string[] } {
  let command: Command = buildProgram({ stdout: () => undefined, stderr: () => undefined, env: {}, interrupted: () => new Promise(() => undefined) });
  let at = 0;
  for (; at < words.length; at++) {
    const sub = command.commands.find((c) => c.name() === words[at]);
    if (!sub) break;
    command = sub;
  }
  return { command, flags: words.slice(at) };
}

/** Parse the flags with the command's own options: unknown ones, or values its parsers refuse, throw. */
function checkFlags(words: readonly string[]): void {
  const { command, flags } = commandOf(words);
  expect(command.name(), words.join(' ')).not.toBe('apsaramq-device');
  const { operands, unknown } = command.parseOptions([...flags]);
  expect(unknown, `${words.join(' ')}: flags the CLI does not have`).toEqual([]);
  if (command.name() !== 'merge') expect(operands, words.join(' ')).toEqual([]);
}

/** The `apsaramq-device …` line of a shell script, split into words (the scripts quote only variables). */
function cliLine(script: string): string[] {
  const line = script.split('\n').find((l) => l.trim().startsWith('apsaramq-device '));
  if (!line) throw new Error(`no apsaramq-device line in ${script}`);
  return line.trim().split(/\s+/).slice(1).map((word) => word.replace(/"/g, ''));
}

function runProcess(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((done) => child.once('close', (code) => done({ code, stdout, stderr })));
}

describe('examples/kubernetes', () => {
  it('parses, and every command line is the CLI\'s, with its real flags and values', async () => {
    const all = await manifests();
    const job = find(all, 'Job', 'simulate');
    const flags = find(all, 'ConfigMap', 'sim-flags').data ?? {};
    expect(job.spec?.completionMode).toBe('Indexed');
    expect(job.spec?.completions).toBe(Number(flags['SIM_SHARDS']));
    expect(job.spec?.parallelism).toBe(job.spec?.completions);
    const shard = (job.spec?.template?.spec?.containers?.[0] as Container);
    const shardArgs = shard.args ?? [];
    expect(shardArgs[shardArgs.indexOf('--shard') + 1]).toBe(`auto/${job.spec?.completions}`);
    for (const manifest of all) {
      for (const container of [...(manifest.spec?.template?.spec?.initContainers ?? []), ...(manifest.spec?.template?.spec?.containers ?? [])]) {
        const env = { ...environment(all, container), JOB_COMPLETION_INDEX: '0' };
        if (container.command?.[0] === 'apsaramq-device') checkFlags(expand(container.args ?? [], env));
        else if (container.command?.join(' ') === '/bin/sh -c' && (container.args?.[0] ?? '').includes('apsaramq-device')) checkFlags(cliLine(container.args?.[0] ?? ''));
      }
    }
  });

  it.skipIf(!available)(`runs here: the emulator pods on Redis, the Indexed Job's shards with JOB_COMPLETION_INDEX 0..N-1, then the merge${skipped}`, async () => {
    const all = await manifests();
    const redis = await startRedis();
    const reports = await tempDir('k8s-reports-');
    const store = await tempDir('k8s-store-');
    const bin = await tempDir('k8s-bin-');

    // The emulator Deployment's pods: two processes of its command line, with --json to learn their free ports.
    const emulator = find(all, 'Deployment', 'emulator').spec?.template?.spec?.containers?.[0] as Container;
    const emulatorEnv: Record<string, string> = { ...environment(all, emulator), EMULATOR_REDIS_URL: redis.url, EMULATOR_HOST: '127.0.0.1', EMULATOR_MQTT_PORT: '0', EMULATOR_API_PORT: '0' };
    const account = find(all, 'Secret', 'apsaramq-account').stringData ?? {};
    const pods = await Promise.all([0, 1].map(() => spawnCli([...expand(emulator.args ?? [], emulatorEnv), '--json'], account)));
    const [a, b] = pods.map((pod) => JSON.parse(pod.firstLine) as { mqttUrl: string; apiEndpoint: string; instanceId: string });
    expect(a?.instanceId).toBe(emulatorEnv['EMULATOR_INSTANCE_ID']);

    // The Job's pods: every index at once, provisioning through one emulator process and connecting to the other.
    const job = find(all, 'Job', 'simulate');
    const shard = job.spec?.template?.spec?.containers?.[0] as Container;
    const shards = job.spec?.completions as number;
    const devices = 12 * shards;
    const shardEnv = {
      ...environment(all, shard),
      SIM_DEVICES: String(devices), SIM_DURATION_S: '2', SIM_PUBLISH_INTERVAL_MS: '500', SIM_CONNECT_RATE: '0',
      SIM_ENDPOINT: a?.apiEndpoint ?? '', SIM_BROKER_URL: b?.mqttUrl ?? '', SIM_STORE: store, REPORTS_DIR: reports,
    };
    const runs = await Promise.all(Array.from({ length: shards }, (_, index) => {
      const env = { ...shardEnv, JOB_COMPLETION_INDEX: String(index) };
      return runProcess(process.execPath, [CLI_BIN, ...expand(shard.args ?? [], env)], { PATH: process.env['PATH'], ...env });
    }));
    for (const [index, run] of runs.entries()) expect(run.code, `shard ${index}: ${run.stderr}`).toBe(0);
    expect((await readdir(reports)).sort()).toEqual(Array.from({ length: shards }, (_, i) => `shard-${i}.json`));

    // The merge Job: its init container's wait (already satisfied), then its script, with the CLI on the PATH.
    await writeFile(join(bin, 'apsaramq-device'), `#!/bin/sh\nexec "${process.execPath}" "${CLI_BIN}" "$@"\n`);
    await chmod(join(bin, 'apsaramq-device'), 0o755);
    const merge = find(all, 'Job', 'merge-reports').spec?.template?.spec;
    const mergeEnv = { PATH: `${bin}:${process.env['PATH'] ?? ''}`, ...shardEnv };
    for (const container of [...(merge?.initContainers ?? []), ...(merge?.containers ?? [])]) {
      const run = await runProcess('/bin/sh', ['-c', container.args?.[0] ?? ''], mergeEnv);
      expect(run.code, `${container.name}: ${run.stderr}`).toBe(0);
    }
    const fleet = JSON.parse(await readFile(join(reports, 'fleet.json'), 'utf8')) as { devices: number; connected: number; shards: unknown[]; published: number; acked: number };
    expect(fleet.devices).toBe(devices);
    expect(fleet.connected).toBe(devices);
    expect(fleet.shards).toHaveLength(shards);
    expect(fleet.acked).toBe(fleet.published);
    expect(fleet.published).toBeGreaterThanOrEqual(devices);
    expect((await readFile(join(reports, 'fleet.html'), 'utf8')).startsWith('<!doctype html>')).toBe(true);
    await Promise.all(pods.map((pod) => pod.stop()));
  });
});
