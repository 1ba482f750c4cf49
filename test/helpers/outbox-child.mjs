// A process that uses the durable outbox (built: dist/outbox) and reports on stdout, one line per fact, for the
// durability tests (test/integration/outbox-durability.test.ts), which kill it, cut its files, or limit its disk.
// Usage: node outbox-child.mjs <mode> <dir> [args...]
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, statSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openOutboxStore } from '../../dist/outbox/index.js';

const [mode, dir, ...args] = process.argv.slice(2);
/**
 * One fact per line on stdout, written before the next step (fs.writeSync: process.stdout.write to a pipe queues in
 * memory when the reader is slower, and a SIGKILL loses the queue, so a line said "before the ack" could arrive never,
 * with the ack done).
 */
function say(line) {
  const bytes = Buffer.from(`${line}\n`);
  for (let at = 0; at < bytes.length; ) {
    try {
      at += writeSync(1, bytes, at);
    } catch (error) {
      if (error.code !== 'EAGAIN') throw error;
    }
  }
}

/** The payload of message `tag` ("<round>:<n>"): the tag, then bytes derived from it, so a reader can tell a genuine one. */
export function payloadFor(tag, length) {
  const filler = createHash('sha256').update(tag).digest('hex');
  return Buffer.from(`${tag}|${filler.repeat(Math.ceil(length / 64)).slice(0, length)}`);
}

/** xorshift32: the same seed, the same run. */
function prng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** The size of the newest hot log file (src/outbox/wal.ts): where accepted messages are written first. */
function newestLog() {
  const logs = readdirSync(dir).filter((f) => /^hot-\d+\.wal$/.test(f)).sort();
  const last = logs.at(-1);
  return last === undefined ? 0 : statSync(join(dir, last)).size;
}

async function writer() {
  const [seed, round, devices] = args.map(Number);
  const random = prng(seed);
  const store = await openOutboxStore({ dir, maxMessages: 1_000_000, maxBytes: 2 ** 30 });
  say('ready');
  const unacked = new Map();
  let n = 0;
  const loop = async () => {
    for (;;) {
      const clientId = `GID_t@@@dev-${Math.floor(random() * devices)}`;
      const tag = `${round}:${n++}`;
      const { seq } = await store.append(clientId, { topic: `t/${clientId}`, payload: payloadFor(tag, 16 + Math.floor(random() * 2000)) }, { sending: true });
      say(`A ${seq} ${clientId} ${tag}`);
      const list = unacked.get(clientId) ?? [];
      list.push(seq);
      unacked.set(clientId, list);
      if (random() < 0.3 && list.length > 0) {
        const oldest = list.shift();
        // Said before the ack: a kill between the removal and the K line must not make the test expect it.
        say(`R ${oldest}`);
        if (await store.ack(clientId, oldest)) say(`K ${oldest}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, loop));
}

async function torn() {
  const [count] = args.map(Number);
  const store = await openOutboxStore({ dir });
  say(`B ${newestLog()}`);
  for (let i = 1; i <= count; i++) {
    const { seq } = await store.append('GID_t@@@torn', { topic: 't/torn', payload: payloadFor(`0:${i}`, 24) });
    say(`S ${seq} ${newestLog()}`);
  }
  process.kill(process.pid, 'SIGKILL');
}

/** Append until the disk refuses; then what still works. `free` (optional): a file to delete, then write again. */
async function full() {
  const [filler] = args;
  const store = await openOutboxStore({ dir, maxMessages: 1_000_000, maxBytes: 2 ** 30 });
  const warnings = [];
  store.on('warning', (w) => warnings.push(w.code));
  const accepted = [];
  let refusal;
  for (let i = 0; refusal === undefined; i++) {
    try {
      accepted.push((await store.append('GID_t@@@full', { topic: 't/full', payload: payloadFor(`0:${i}`, 4000) }, { sending: true })).seq);
    } catch (error) {
      refusal = { code: error.code, retryable: error.retryable, name: error.name, message: error.message };
    }
  }
  const result = { accepted, refusal, warnings };
  result.pendingWhileFull = (await store.pending('GID_t@@@full', { limit: 1_000_000 })).map((m) => m.seq);
  result.acksWhileFull = await Promise.all(accepted.slice(0, 3).map((seq) => store.ack('GID_t@@@full', seq)));
  result.pendingAfterAcks = (await store.pending('GID_t@@@full', { limit: 1_000_000 })).length;
  result.againWhileFull = await store.append('GID_t@@@full', { topic: 't/full', payload: 'x' }).then(() => 'accepted', (e) => e.code);
  result.statsWhileFull = store.stats();
  if (filler !== undefined) {
    rmSync(filler);
    result.retried = await store.retryWrites();
    result.afterFree = (await store.append('GID_t@@@full', { topic: 't/full', payload: payloadFor('1:0', 100) })).seq;
    await store.close();
    const reopened = await openOutboxStore({ dir });
    result.reopened = (await reopened.pending('GID_t@@@full', { limit: 1_000_000 })).map((m) => m.seq);
    await reopened.close();
  } else {
    await store.close();
  }
  say(JSON.stringify(result));
}

/** Fill a small file system, then `full`. */
async function fillThenFull() {
  mkdirSync(dir, { recursive: true });
  const filler = join(dir, '..', 'filler');
  // Leave a little room: the store must open, then run out while appending.
  const { bavail, bsize } = statfsSync(join(dir, '..'));
  writeFileSync(filler, Buffer.alloc(Math.max(0, bavail * bsize - 600 * 1024)));
  args.unshift(filler);
  await full();
}

async function hold() {
  await openOutboxStore({ dir });
  say('ready');
  setInterval(() => {}, 1 << 30);
}

async function memory() {
  const [count] = args.map(Number);
  const store = await openOutboxStore({ dir, maxMessages: 10 * count, maxBytes: 2 ** 31 });
  // Random bytes: LevelDB compresses, and the point is a store that really grows on disk.
  const payload = randomBytes(1024);
  const sample = () => {
    globalThis.gc();
    const { heapUsed, rss } = process.memoryUsage();
    return { heapUsed, rss };
  };
  const marks = {};
  let done = 0;
  const append = async (upTo) => {
    let next = done;
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        while (next < upTo) {
          const i = next++;
          await store.append(`GID_t@@@dev-${i % 1000}`, { topic: 't/mem', payload });
        }
      }),
    );
    done = upTo;
  };
  // The first mark after the hot log is full (a bound of a few MiB, src/outbox/wal.ts): from there, nothing grows.
  for (const checkpoint of [10_000, count]) {
    await append(checkpoint);
    await store.flush();
    marks[checkpoint] = sample();
  }
  marks.stats = store.stats();
  await store.close();
  say(JSON.stringify(marks));
}

const modes = { writer, torn, full, fillThenFull, hold, memory };
// Imported by a test for payloadFor: run nothing.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await modes[mode]();
