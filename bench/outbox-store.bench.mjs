// The durable outbox (issue 17): which embedded store, and what durability costs. In one run, on one machine:
// 1. install: each candidate engine (better-sqlite3 12, lmdb 3, classic-level 3) installed into a fresh project with
//    an empty npm cache, as CI would (`npm install <pkg>`), timed; then again with --ignore-scripts (npm 11 may skip
//    install scripts): does it still load?
// 2. the machine's raw fsync rate: write 64 bytes + fdatasync, in a loop (the ceiling of one fsync per message);
// 3. each engine on the same workload, through the same group committer (writes that arrive while a durable write
//    runs share the next one): one durable write per message (sequential, the baseline) vs group commit with 1,000
//    devices appending interleaved; removals written without fsync; reopen and read every device's messages in order;
//    CPU per message (process.cpuUsage: every thread of the process, the engines' own included) and the event loop's
//    worst delay (a synchronous engine blocks it for each fsync);
// 3b. each engine's files cut short, as a power cut mid-write leaves them: a child process writes 2,000 records in
//    durable batches of 100 and is killed (SIGKILL); the file that holds the last batch (classic-level: its log;
//    better-sqlite3: its WAL; lmdb: data.mdb, it has no log) is cut 1, 100, 4,096 and 20,000 bytes short; a fresh
//    child reopens it and counts. A sound engine keeps every batch before the cut one; "crashed" is the process dying;
// 4. the chosen store through its API (dist/outbox): the same, plus "delivered messages per second" with one mqtt.js
//    client publishing QoS 1 to Mosquitto: durable (append, publish, PUBACK, ack) vs an in-memory queue (the goal of
//    the connector integration: >= 0.8x).
// Env: BENCH_OUTBOX_DEVICES (1000), BENCH_OUTBOX_MESSAGES (20000), BENCH_OUTBOX_PAYLOAD (256),
// BENCH_OUTBOX_ENGINES (better-sqlite3,lmdb,classic-level), BENCH_OUTBOX_INSTALL (1; 0 = use what resolves from
// this checkout), BENCH_OUTBOX_PUBLISHES (20000).
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ROOT, verdict } from './lib/child.mjs';
import { startMosquitto } from './lib/mosquitto.mjs';

const DEVICES = Number(process.env.BENCH_OUTBOX_DEVICES ?? 1000);
const MESSAGES = Number(process.env.BENCH_OUTBOX_MESSAGES ?? 20_000);
const PAYLOAD = Number(process.env.BENCH_OUTBOX_PAYLOAD ?? 256);
const PUBLISHES = Number(process.env.BENCH_OUTBOX_PUBLISHES ?? 20_000);
const ENGINES = (process.env.BENCH_OUTBOX_ENGINES ?? 'better-sqlite3,lmdb,classic-level').split(',').filter(Boolean);
const INSTALL = process.env.BENCH_OUTBOX_INSTALL !== '0';
const SPECS = { 'better-sqlite3': 'better-sqlite3@12', lmdb: 'lmdb@3', 'classic-level': 'classic-level@3' };
/** One durable write per message: this many, sequentially (a slow disk makes more take too long). */
const SINGLE = 300;
/** Appends outstanding at once in the group-commit phases (the 1,000 devices each with one publish waiting). */
const WINDOW = DEVICES;

const CHILD = process.argv[2] === '--child';
const work = CHILD ? '' : mkdtempSync(join(tmpdir(), 'apsaramq-outbox-bench-'));
const loads = [loadavg()[0]];
const payload = Buffer.alloc(PAYLOAD, 0x5a);
const deviceId = (d) => `GID_bench@@@device-${String(d).padStart(5, '0')}`;

// ---- 1. install
function install(name, extra) {
  const dir = join(work, `install-${name}${extra.length ? '-noscripts' : ''}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  const started = performance.now();
  let ok = true;
  let output = '';
  try {
    output = execFileSync('npm', ['install', SPECS[name], '--no-audit', '--no-fund', '--cache', join(dir, '.npm-cache'), ...extra], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    ok = false;
    output = String(error.stderr ?? error.message);
  }
  return { dir, ok, seconds: (performance.now() - started) / 1000, output };
}

async function loadEngine(name, dir) {
  const require = createRequire(join(dir, 'package.json'));
  const module = await import(pathToFileURL(require.resolve(name)).href);
  return name === 'better-sqlite3' ? module.default : { ...module.default, ...module };
}

/** Open a throwaway database: proves the native part loads (better-sqlite3 only loads its binary on first use). */
async function smoke(name, module) {
  const dir = mkdtempSync(join(work, `smoke-${name}-`));
  const adapter = await ADAPTERS[name](module, dir);
  await adapter.write([[Buffer.from('k'), Buffer.from('v')]], [], true);
  await adapter.close();
}

// ---- 3. engines behind one small interface: durable (or lazy) batches, ordered range reads.
const upper = (prefix) => {
  const end = Buffer.from(prefix);
  end[end.length - 1] += 1;
  return end;
};
const ADAPTERS = {
  async 'classic-level'(module, dir) {
    const db = new module.ClassicLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    return {
      write: (puts, dels, sync) => db.batch([...puts.map(([key, value]) => ({ type: 'put', key, value })), ...dels.map((key) => ({ type: 'del', key }))], { sync }),
      read: async (prefix) => (await db.iterator({ gte: prefix, lt: upper(prefix) }).all()).map(([key]) => key),
      close: () => db.close(),
    };
  },
  async lmdb(module, dir) {
    // overlappingSync off: a commit's promise resolves once it is flushed (durable), not before.
    const db = module.open({ path: dir, keyEncoding: 'binary', encoding: 'binary', overlappingSync: false, compression: false });
    return {
      // LMDB syncs every commit (no per-write choice): removals pay an fsync too.
      write: (puts, dels) => db.batch(() => {
        for (const [key, value] of puts) db.put(key, value);
        for (const key of dels) db.remove(key);
      }),
      read: async (prefix) => [...db.getKeys({ start: prefix, end: upper(prefix) })],
      close: () => db.close(),
    };
  },
  async 'better-sqlite3'(Database, dir) {
    const db = new Database(join(dir, 'outbox.db'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE IF NOT EXISTS m (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID');
    const insert = db.prepare('INSERT INTO m (k, v) VALUES (?, ?)');
    const remove = db.prepare('DELETE FROM m WHERE k = ?');
    const select = db.prepare('SELECT k FROM m WHERE k >= ? AND k < ? ORDER BY k').pluck();
    const transaction = db.transaction((puts, dels) => {
      for (const [key, value] of puts) insert.run(key, value);
      for (const key of dels) remove.run(key);
    });
    let mode = '';
    return {
      // Synchronous: the fsync happens on the event loop's thread. WAL + FULL syncs each commit; NORMAL does not.
      write: async (puts, dels, sync) => {
        const wanted = sync ? 'FULL' : 'NORMAL';
        if (mode !== wanted) db.pragma(`synchronous = ${(mode = wanted)}`);
        transaction(puts, dels);
      },
      read: async (prefix) => select.all(prefix, upper(prefix)),
      close: async () => db.close(),
    };
  },
};

/** Writes that arrive while one runs wait and go together in the next (durable if any of them must be). */
function groupCommitter(adapter) {
  let queue = [];
  let running = false;
  async function run() {
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      const puts = [];
      const dels = [];
      let sync = false;
      for (const op of batch) {
        if (op.put) puts.push(op.put);
        if (op.del) dels.push(op.del);
        sync ||= op.sync;
      }
      await adapter.write(puts, dels, sync);
      for (const op of batch) op.resolve();
    }
    running = false;
  }
  return (op) =>
    new Promise((resolve) => {
      queue.push({ ...op, resolve });
      if (!running) {
        running = true;
        setImmediate(run);
      }
    });
}

function key(device, seq) {
  const id = Buffer.from(`m${deviceId(device)}\0`);
  const k = Buffer.alloc(id.length + 8);
  id.copy(k);
  k.writeBigUInt64BE(BigInt(seq), id.length);
  return k;
}

/** Measure `fn`: wall ms, CPU µs (all threads), worst event-loop delay. */
async function measure(fn) {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  const cpu = process.cpuUsage();
  const started = performance.now();
  const result = await fn();
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  histogram.disable();
  return { ms, cpuUs: used.user + used.system, loopMaxMs: histogram.max / 1e6, result };
}

/** Run `count` tasks with at most `window` outstanding. */
async function windowed(count, window, task) {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(window, count) }, worker));
}

async function engineWorkload(name, module) {
  const dir = mkdtempSync(join(work, `engine-${name}-`));
  let adapter = await ADAPTERS[name](module, dir);
  const single = await measure(async () => {
    for (let i = 0; i < SINGLE; i++) await adapter.write([[key(0, 1e9 + i), payload]], [], true);
  });
  await adapter.write([], Array.from({ length: SINGLE }, (_, i) => key(0, 1e9 + i)), true);
  let commit = groupCommitter(adapter);
  // Offline backlog: every device appends, interleaved.
  const backlog = await measure(() => windowed(MESSAGES, WINDOW, (i) => commit({ put: [key(i % DEVICES, i + 1), payload], sync: true })));
  await adapter.close();
  // Restart: every device's messages, in order.
  const reopen = await measure(async () => {
    adapter = await ADAPTERS[name](module, dir);
    let total = 0;
    for (let d = 0; d < DEVICES; d++) {
      const keys = await adapter.read(Buffer.from(`m${deviceId(d)}\0`));
      for (let j = 1; j < keys.length; j++) if (Buffer.compare(keys[j - 1], keys[j]) >= 0) throw new Error(`${name}: out of order`);
      total += keys.length;
    }
    return total;
  });
  if (reopen.result !== MESSAGES) throw new Error(`${name}: ${reopen.result} of ${MESSAGES} after reopen`);
  commit = groupCommitter(adapter);
  // Steady state online: each new append (durable) and one removal of the backlog (lazy), interleaved.
  const steady = await measure(() =>
    windowed(MESSAGES, WINDOW, async (i) => {
      await commit({ put: [key(i % DEVICES, MESSAGES + i + 1), payload], sync: true });
      await commit({ del: key(i % DEVICES, i + 1), sync: false });
    }),
  );
  await adapter.close();
  return summary(single, backlog, reopen, steady);
}

/** The four phases' measurements as rates and costs per message. */
function summary(single, backlog, reopen, steady) {
  return {
    singlePerSec: (SINGLE / single.ms) * 1000,
    groupPerSec: (MESSAGES / backlog.ms) * 1000,
    groupCpuUs: backlog.cpuUs / MESSAGES,
    groupLoopMaxMs: backlog.loopMaxMs,
    reopenReadPerSec: (MESSAGES / reopen.ms) * 1000,
    steadyPerSec: (MESSAGES / steady.ms) * 1000,
    steadyCpuUs: steady.cpuUs / MESSAGES,
    steadyLoopMaxMs: steady.loopMaxMs,
  };
}

function rawFsyncPerSec() {
  const fd = openSync(join(work, 'fsync-probe'), 'w');
  const chunk = Buffer.alloc(64, 1);
  const started = performance.now();
  let n = 0;
  while (performance.now() - started < 2000) {
    writeSync(fd, chunk);
    fdatasyncSync(fd);
    n += 1;
  }
  const ms = performance.now() - started;
  closeSync(fd);
  return (n / ms) * 1000;
}

// ---- 3b. files cut short (in child processes: an engine may kill its process on a damaged file)
const CUT_RECORDS = 2000;
const CUTS = [1, 100, 4096, 20_000];

/** The file holding an engine's last write. */
function lastWriteFile(name, dir) {
  const files = readdirSync(dir);
  if (name === 'classic-level') return join(dir, files.filter((f) => /^\d+\.log$/.test(f)).sort().at(-1));
  if (name === 'better-sqlite3') return join(dir, files.includes('outbox.db-wal') ? 'outbox.db-wal' : 'outbox.db');
  return join(dir, 'data.mdb');
}

/** In a child: write CUT_RECORDS durably in batches of 100, then die; or count what a reopen finds. */
async function cutChild([, , , task, name, installDir, dir]) {
  const module = await loadEngine(name, installDir);
  const adapter = await ADAPTERS[name](module, dir);
  if (task === 'write') {
    for (let i = 0; i < CUT_RECORDS; i += 100) await adapter.write(Array.from({ length: 100 }, (_, j) => [key(0, i + j + 1), payload]), [], true);
    process.kill(process.pid, 'SIGKILL');
  }
  console.log(JSON.stringify({ found: (await adapter.read(Buffer.from(`m${deviceId(0)}\0`))).length }));
  await adapter.close();
}

function runChild(args) {
  const result = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', ...args], { encoding: 'utf8' });
  return result;
}

function cutSurvival(name, installDir) {
  const outcomes = [];
  let cutFile = '';
  for (const cut of CUTS) {
    const dir = mkdtempSync(join(work, `cut-${name}-`));
    runChild(['write', name, installDir, dir]);
    const file = lastWriteFile(name, dir);
    cutFile = file.split('/').at(-1);
    truncateSync(file, Math.max(0, statSync(file).size - cut));
    const counted = runChild(['count', name, installDir, dir]);
    if (counted.signal) outcomes.push(`crashed (${counted.signal})`);
    else if (counted.status !== 0) outcomes.push(`error (${(counted.stderr.match(/Error[^\n]*/) ?? ['?'])[0].slice(0, 60)})`);
    else outcomes.push(String(JSON.parse(counted.stdout.trim().split('\n').at(-1)).found));
  }
  return { cutFile, outcomes };
}

// ---- 4. the chosen store, through its API
async function storeWorkload() {
  const { openOutboxStore } = await import(pathToFileURL(join(ROOT, 'dist', 'outbox', 'index.js')).href);
  const dir = join(work, 'store');
  const options = { dir, maxMessages: 10 * MESSAGES, maxBytes: 2 ** 30 };
  let store = await openOutboxStore(options);
  const single = await measure(async () => {
    for (let i = 0; i < SINGLE; i++) await store.append('GID_bench@@@single', { topic: 't/single', payload });
  });
  for (let seq = 1; seq <= SINGLE; seq++) await store.ack('GID_bench@@@single', seq);
  const backlog = await measure(() => windowed(MESSAGES, WINDOW, (i) => store.append(deviceId(i % DEVICES), { topic: 't/bench', payload })));
  await store.close();
  const reopen = await measure(async () => {
    store = await openOutboxStore(options);
    let total = 0;
    for (let d = 0; d < DEVICES; d++) total += (await store.pending(deviceId(d), { limit: MESSAGES })).length;
    return total;
  });
  if (reopen.result !== MESSAGES) throw new Error(`store: ${reopen.result} of ${MESSAGES} after reopen`);
  // Steady state: append one, acknowledge one of the backlog (per device, oldest first).
  const firstSeq = SINGLE + 1;
  const steady = await measure(() =>
    windowed(MESSAGES, WINDOW, async (i) => {
      await store.append(deviceId(i % DEVICES), { topic: 't/bench', payload }, { sending: true });
      await store.ack(deviceId(i % DEVICES), firstSeq + i);
    }),
  );
  const stats = store.stats();
  await store.close();
  return {
    ...summary(single, backlog, reopen, steady),
    stats,
    openStore: () => openOutboxStore({ dir: join(work, 'store-mqtt'), maxMessages: 10 * PUBLISHES, maxBytes: 2 ** 30 }),
  };
}

/**
 * One mqtt.js client publishes QoS 1 to Mosquitto through an outbox, pipelined as a connector does: the caller hands
 * over messages with up to 1,000 not yet accepted; each accepted one joins the send window (100 unacknowledged
 * PUBLISHes); each PUBACK acknowledges it in the outbox. The durable store accepts on fsync (group commit; appended
 * with `sending`, so the in-flight mark rides in the same write); the in-memory queue accepts at once.
 */
async function delivered(brokerUrl, outbox) {
  const mqtt = await import('mqtt');
  const client = await mqtt.connectAsync(brokerUrl, { clientId: `bench-${outbox.name}`, clean: true, reconnectPeriod: 0 });
  // A queue with a head index: shift() on a long array would charge both outboxes for the bench's own bookkeeping.
  const accepted = [];
  let head = 0;
  let inFlight = 0;
  let done = 0;
  let finished;
  const allDone = new Promise((resolve) => {
    finished = resolve;
  });
  const pump = () => {
    while (inFlight < 100 && head < accepted.length) {
      const seq = accepted[head++];
      inFlight += 1;
      client.publish('bench/outbox', payload, { qos: 1 }, (error) => {
        if (error) throw error;
        inFlight -= 1;
        void outbox.ack(seq).then(() => {
          if (++done === PUBLISHES) finished();
        });
        pump();
      });
    }
  };
  const run = await measure(async () => {
    await windowed(PUBLISHES, 1000, async () => {
      const { seq } = await outbox.append({ topic: 'bench/outbox', payload });
      accepted.push(seq);
      pump();
    });
    await allDone;
  });
  await client.endAsync();
  return { perSec: (PUBLISHES / run.ms) * 1000, cpuUs: run.cpuUs / PUBLISHES };
}

function memoryOutbox() {
  const queue = new Map();
  let seq = 0;
  return {
    name: 'memory',
    append: async (message) => {
      queue.set(++seq, message);
      return { seq };
    },
    ack: async (done) => queue.delete(done),
  };
}

function durableOutbox(store) {
  const clientId = 'GID_bench@@@mqtt';
  return {
    name: 'durable',
    append: (message) => store.append(clientId, message, { sending: true }),
    ack: (seq) => store.ack(clientId, seq),
  };
}

const fmt = (n, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

if (CHILD) {
  await cutChild(process.argv);
  process.exit(0);
}

try {
  console.log(`${DEVICES} devices, ${MESSAGES} messages of ${PAYLOAD} bytes per phase; ${SINGLE} sequential durable writes for the one-fsync-per-message baseline`);
  const engines = {};
  const installDirs = {};
  if (INSTALL) {
    console.log('\n| Engine | npm install (fresh cache) | loads | --ignore-scripts: loads |\n|---|---|---|---|');
    for (const name of ENGINES) {
      const normal = install(name, []);
      const bare = install(name, ['--ignore-scripts']);
      const row = { installed: normal.ok, seconds: normal.seconds };
      for (const [what, attempt] of [['normal', normal], ['bare', bare]]) {
        try {
          if (!attempt.ok) throw new Error('install failed');
          const module = await loadEngine(name, attempt.dir);
          await smoke(name, module);
          row[what] = 'yes';
          if (what === 'normal') {
            engines[name] = module;
            installDirs[name] = attempt.dir;
          }
        } catch (error) {
          row[what] = `no (${String(error.message).split('\n')[0].slice(0, 60)})`;
        }
      }
      console.log(`| ${name} (${SPECS[name]}) | ${normal.ok ? 'ok' : 'FAILED'}, ${fmt(row.seconds, 1)} s | ${row.normal} | ${row.bare} |`);
    }
  } else {
    for (const name of ENGINES) {
      try {
        engines[name] = await loadEngine(name, ROOT);
        installDirs[name] = ROOT;
      } catch {
        console.log(`(${name} is not resolvable from this checkout: skipped)`);
      }
    }
  }

  const fsync = rawFsyncPerSec();
  console.log(`\nraw fsync rate (write 64 B + fdatasync, 2 s): ${fmt(fsync)}/s`);
  loads.push(loadavg()[0]);

  console.log(
    '\n| Engine | 1 fsync per message | group commit, 1,000 devices | ratio | vs raw fsync | CPU per durable append | event loop worst | reopen + read all, in order | steady state (append + removal) | CPU per message (append + removal) | event loop worst |\n|---|---|---|---|---|---|---|---|---|---|---|',
  );
  const rows = {};
  for (const [name, module] of Object.entries(engines)) {
    const r = await engineWorkload(name, module);
    rows[name] = r;
    loads.push(loadavg()[0]);
    console.log(
      `| ${name} | ${fmt(r.singlePerSec)}/s | ${fmt(r.groupPerSec)}/s | ${fmt(r.groupPerSec / r.singlePerSec, 1)}x | ${fmt(r.groupPerSec / fsync, 1)}x | ${fmt(r.groupCpuUs, 1)} µs | ${fmt(r.groupLoopMaxMs, 1)} ms | ${fmt(r.reopenReadPerSec)}/s | ${fmt(r.steadyPerSec)}/s | ${fmt(r.steadyCpuUs, 1)} µs | ${fmt(r.steadyLoopMaxMs, 1)} ms |`,
    );
  }

  const s = await storeWorkload();
  loads.push(loadavg()[0]);
  console.log(
    `| **OutboxStore** (dist/outbox: classic-level, CRC, bounds, marks) | ${fmt(s.singlePerSec)}/s | ${fmt(s.groupPerSec)}/s | ${fmt(s.groupPerSec / s.singlePerSec, 1)}x | ${fmt(s.groupPerSec / fsync, 1)}x | ${fmt(s.groupCpuUs, 1)} µs | ${fmt(s.groupLoopMaxMs, 1)} ms | ${fmt(s.reopenReadPerSec)}/s | ${fmt(s.steadyPerSec)}/s | ${fmt(s.steadyCpuUs, 1)} µs | ${fmt(s.steadyLoopMaxMs, 1)} ms |`,
  );

  console.log(
    `\n${CUT_RECORDS} records written in durable batches of 100 by a process then killed; the file holding the last batch cut short; records a reopen finds:\n\n| Engine | file cut | ${CUTS.map((c) => `${fmt(c)} bytes short`).join(' | ')} |\n|---|---|${CUTS.map(() => '---').join('|')}|`,
  );
  for (const name of Object.keys(engines)) {
    const { cutFile, outcomes } = cutSurvival(name, installDirs[name]);
    console.log(`| ${name} | ${cutFile} | ${outcomes.join(' | ')} |`);
  }
  loads.push(loadavg()[0]);

  let mqttRatio;
  try {
    const broker = await startMosquitto(work, [], { anonymous: true });
    try {
      const store = await s.openStore();
      const rounds = { memory: [], durable: [] };
      for (let round = 0; round < 3; round++) {
        for (const outbox of round % 2 ? [durableOutbox(store), memoryOutbox()] : [memoryOutbox(), durableOutbox(store)]) {
          rounds[outbox.name].push(await delivered(broker.url, outbox));
        }
      }
      await store.close();
      const best = (list) => list.reduce((a, b) => (b.perSec > a.perSec ? b : a));
      const memory = best(rounds.memory);
      const durable = best(rounds.durable);
      mqttRatio = durable.perSec / memory.perSec;
      console.log(
        `\ndelivered QoS 1 messages/s, one mqtt.js client to Mosquitto, 1,000 waiting for acceptance and 100 PUBLISHes in flight, ${PUBLISHES} per round, best of 3 alternating rounds: in-memory queue ${fmt(memory.perSec)}/s (${fmt(memory.cpuUs, 1)} µs CPU each), durable outbox ${fmt(durable.perSec)}/s (${fmt(durable.cpuUs, 1)} µs CPU each)`,
      );
    } finally {
      await broker.stop();
    }
  } catch (error) {
    console.log(`\n(delivered messages/s: skipped, Mosquitto could not start: ${error.message})`);
  }

  console.log(`\nload average during the run: ${loads.map((l) => l.toFixed(1)).join(', ')}`);
  verdict('OutboxStore durable accepts/s, group commit vs one fsync per message', s.groupPerSec / s.singlePerSec, 10);
  if (mqttRatio !== undefined) verdict('delivered msg/s, durable outbox vs in-memory queue (mqtt.js + Mosquitto)', mqttRatio, 0.8);
} finally {
  rmSync(work, { recursive: true, force: true });
}
