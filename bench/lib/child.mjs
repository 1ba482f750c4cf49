// Helpers shared by the simulator benchmarks: run Node scripts in their own processes and read their JSON.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (bench/lib/../..). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The built CLI. */
export const CLI = join(ROOT, 'dist', 'cli', 'bin.js');

/**
 * Spawn Node; with `raiseFileLimit`, through a shell that first raises the soft open-file limit to the hard limit
 * (children it forks, such as the embedded emulator, inherit it).
 */
function spawnNode(argv, options, raiseFileLimit) {
  if (!raiseFileLimit) return spawn(process.execPath, argv, options);
  return spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', process.execPath, ...argv], options);
}

/**
 * Run `node <script> ...args` to completion; resolves with its exit code, stdout and stderr. stderr is echoed
 * with a prefix, so a long run shows its progress.
 */
export function runNode(script, args = [], { echo = '', env = {}, nodeArgs = [], raiseFileLimit = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawnNode([...nodeArgs, script, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }, raiseFileLimit);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
      if (echo) for (const line of String(d).split('\n')) if (line.trim()) process.stderr.write(`  ${echo}| ${line}\n`);
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Start a long-running Node script that prints one JSON line on stdout when ready (e.g. a broker).
 * Resolves with that object and a `stop()` that sends SIGTERM and waits for the exit.
 */
export function startNode(script, args = [], env = {}, { raiseFileLimit = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawnNode([script, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] }, raiseFileLimit);
    const exited = new Promise((r) => child.once('exit', r));
    let buffered = '';
    const onData = (d) => {
      buffered += d;
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      child.stdout.off('data', onData);
      resolve({
        info: JSON.parse(buffered.slice(0, newline)),
        pid: child.pid,
        stop: async () => {
          if (child.exitCode === null) child.kill('SIGTERM');
          await exited;
        },
      });
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code} before it was ready`)));
  });
}

/** The last line of a process's stdout parsed as JSON. */
export function lastJson(stdout) {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Print the verdict line every benchmark ends with, and set the exit code on a miss. */
export function verdict(name, ratio, threshold, higherIsBetter = true) {
  const pass = Number.isFinite(ratio) && (higherIsBetter ? ratio >= threshold : ratio <= threshold);
  console.log(`${name}: ${ratio.toFixed(2)}${higherIsBetter ? 'x' : ''} (target ${higherIsBetter ? '>=' : '<='} ${threshold}) ${pass ? 'PASS' : 'FAIL'}`);
  if (!pass) process.exitCode = 1;
  return pass;
}
