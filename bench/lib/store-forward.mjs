// Store and forward, proven end to end (issue 17): a device publishes QoS 1 messages at a steady rate through a relay
// to Mosquitto (persistent, so a restart keeps the subscriber's session and queue) while the run takes the uplink
// away (the relay cuts every connection and refuses new ones), restarts the broker, and kill -9s the publishing
// process, restarting it on the same outbox. An independent subscriber, mosquitto_sub with a persistent session,
// connected to the broker directly (not through the relay), receives what was delivered. The oracle: every message
// the publisher reported accepted is received (0 lost); duplicates are counted and compared with what the publisher
// reported as possible duplicates.
//
// Two publishers: `library` (bench/lib/store-forward-publisher.mjs: connectDevice + enqueueDurable) and `cli` (the
// `gateway` command, fed JSON lines on stdin by this runner). Used by test/integration/store-forward.test.ts (small)
// and bench/store-forward.bench.mjs (the issue's scale).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { CLI, ROOT } from './child.mjs';
import { startMosquitto } from './mosquitto.mjs';
import { startRelay } from './relay.mjs';

const PUBLISHER = join(ROOT, 'bench', 'lib', 'store-forward-publisher.mjs');
const CLIENT_ID = 'GID_sf@@@device-1';
const INSTANCE_ID = 'mqtt-sf-run';
const TOPIC = 'sf/device-1';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** Run a child and hand its stdout lines to `onLine`; `exited` resolves with its exit code or signal. */
function child(command, args, onLine, options = {}) {
  const proc = spawn(command, args, { stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH, ...options.env } });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  createInterface({ input: proc.stdout }).on('line', onLine);
  // A pipe to a process killed with -9 errors on the next write: the lines written then are simply not read.
  proc.stdin?.on('error', () => undefined);
  const exited = new Promise((resolve) => proc.once('close', (code, signal) => resolve({ code, signal })));
  return { proc, exited, stderr: () => stderr };
}

/**
 * One run. Times are ms from the start of publishing: `outage` { at, ms }, `restarts` (broker restarts), `kill` (kill -9
 * of the publisher, restarted `restartAfterMs` later). `deadlineMs`: how long after the last message was handed over
 * to wait for every accepted one to arrive. `log`: progress lines.
 */
export async function runStoreForward({ mode, messages, rate, outage, restarts = [], kill, restartAfterMs = 300, deadlineMs = 120_000, log = () => undefined }) {
  const work = mkdtempSync(join(tmpdir(), `apsaramq-store-forward-${mode}-`));
  const { DeviceCredential } = await import(pathToFileURL(join(ROOT, 'dist', 'index.js')).href);
  const credential = new DeviceCredential({ clientId: CLIENT_ID, instanceId: INSTANCE_ID, deviceAccessKeyId: 'DC.sfKey', deviceAccessKeySecret: `DC.${randomBytes(12).toString('hex')}` });
  const subscriber = { username: 'sf-subscriber', password: randomBytes(12).toString('hex') };
  const stopping = [];
  const result = {
    mode,
    messages,
    handed: 0,
    accepted: new Set(),
    refused: 0,
    reportedDelivered: new Set(),
    reportedPossibleDuplicates: 0,
    recoveredPossibleDuplicates: 0,
    received: new Map(),
    outOfOrder: 0,
    outOfOrderIds: [],
    publisherDuplicates: 0,
    brokerDuplicates: 0,
    dropped: 0,
    events: [],
  };
  const at = (what) => {
    const event = { at: Math.round(performance.now() - t0), what };
    result.events.push(event);
    log(`${(event.at / 1000).toFixed(1)} s: ${what}`);
  };
  let t0 = performance.now();
  try {
    const broker = await startMosquitto(work, [credential], { persistence: true, logins: [subscriber] });
    stopping.push(() => broker.stop());
    const relay = await startRelay(broker.url);
    stopping.push(() => relay.close());

    // The subscriber: its own persistent session, on the broker directly.
    let lastFirst = -1;
    let lastDup = false;
    const subLines = [];
    let onReceived = () => undefined;
    let subscribed;
    const subscribedOnce = new Promise((resolve) => (subscribed = resolve));
    // stdbuf: mosquitto_sub's stdout is a pipe here, which its C library would buffer in blocks.
    const sub = child('stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(broker.port), '-u', subscriber.username, '-P', subscriber.password, '-i', 'sf-subscriber', '-c', '-q', '1', '-t', 'sf/#', '-F', '%p', '-d'], (line) => {
      if (process.env.SF_DEBUG) subLines.push(line);
      if (/^Subscribed/.test(line)) subscribed();
      // -d says, before each payload, whether the broker sent it again itself (DUP flag: d1) after its restart.
      const publish = /received PUBLISH \(d([01]),/.exec(line);
      if (publish) lastDup = publish[1] === '1';
      const m = /^sf-(\d+)$/.exec(line);
      if (!m) return;
      const n = Number(m[1]);
      const seen = result.received.get(n) ?? 0;
      result.received.set(n, seen + 1);
      if (seen > 0) result[lastDup ? 'brokerDuplicates' : 'publisherDuplicates'] += 1;
      if (seen === 0) {
        if (n < lastFirst) {
          result.outOfOrder += 1;
          if (result.outOfOrderIds.length < 20) result.outOfOrderIds.push(`${n} after ${lastFirst}${lastDup ? ' (DUP)' : ''}`);
        }
        lastFirst = Math.max(lastFirst, n);
      }
      onReceived();
    });
    stopping.push(async () => {
      sub.proc.kill('SIGTERM');
      await sub.exited;
    });
    await subscribedOnce;
    at('subscriber subscribed');

    // The publisher, in its process; `next` is the first message it has not been handed yet.
    const outboxDir = join(work, 'outbox');
    let next = 0;
    let publisher;
    const publisherLines = [];
    const onPublisherLine = (line) => {
      if (process.env.SF_DEBUG) publisherLines.push(line);
      const [kind, a, b] = line.split(' ');
      if (kind === 'H') next = Math.max(next, Number(a) + 1);
      else if (kind === 'A') result.accepted.add(Number(a));
      else if (kind === 'F') result.refused += 1;
      else if (kind === 'D') {
        result.reportedDelivered.add(Number(a));
        if (b === '1') result.reportedPossibleDuplicates += 1;
      } else if (kind === 'X') result.dropped += 1;
      else if (kind === 'R') result.recoveredPossibleDuplicates += JSON.parse(line.slice(2)).possibleDuplicates;
      else if (kind === 'C') at('publisher connected');
    };
    const onGatewayLine = (line) => {
      let report;
      try {
        report = JSON.parse(line);
      } catch {
        return;
      }
      const n = Number(report.id);
      if (report.accepted) result.accepted.add(n);
      else if (report.delivered) {
        result.reportedDelivered.add(n);
        if (report.possibleDuplicate) result.reportedPossibleDuplicates += 1;
      } else if (report.dropped) result.dropped += 1;
      else if (report.error) result.refused += 1;
    };
    let feeding;
    const startPublisher = (from, count, startedAt) => {
      if (mode === 'library') {
        const config = { brokerUrl: relay.url, dir: outboxDir, credential: credential.toWire(), topic: TOPIC, start: from, count, rate };
        publisher = child(process.execPath, [PUBLISHER, JSON.stringify(config)], onPublisherLine);
        return;
      }
      publisher = child(
        process.execPath,
        [CLI, 'gateway', '--devices', devicesFile, '--outbox', outboxDir, '--instance-id', INSTANCE_ID, '--broker-url', relay.url, '--store', join(work, 'credentials')],
        onGatewayLine,
        { stdin: true },
      );
      const own = publisher;
      // This runner is the gateway's data source: one JSON line per message, at the rate.
      feeding = (async () => {
        for (let n = from; n < from + count; n++) {
          if (own.proc.exitCode !== null || own.proc.signalCode !== null || own.killed) return;
          await sleep(startedAt + ((n - firstOfRun) * 1000) / rate - performance.now());
          if (own.killed) return;
          own.proc.stdin.write(`${JSON.stringify({ id: String(n), clientId: CLIENT_ID, topic: TOPIC, payload: `sf-${n}` })}\n`);
          next = n + 1;
        }
        own.proc.stdin.end();
      })();
    };
    let devicesFile;
    let firstOfRun = 0;
    if (mode === 'cli') {
      devicesFile = join(work, 'devices.txt');
      writeFileSync(devicesFile, `# the store-and-forward run's device\n${CLIENT_ID}\n`);
      const { FileCredentialStore } = await import(pathToFileURL(join(ROOT, 'dist', 'registrar.js')).href);
      await new FileCredentialStore(join(work, 'credentials')).save(credential);
    }

    t0 = performance.now();
    at('publishing');
    startPublisher(0, messages, t0);
    const timeline = [];
    if (outage) {
      timeline.push(
        sleep(outage.at).then(() => {
          relay.down();
          at(`uplink down for ${outage.ms} ms`);
          return sleep(outage.ms);
        }).then(() => {
          relay.up();
          at('uplink up');
        }),
      );
    }
    // Broker restarts in order (one may fall within another's time).
    timeline.push(
      (async () => {
        for (const when of restarts) {
          await sleep(t0 + when - performance.now());
          await broker.stop();
          await broker.start();
          at('broker restarted');
        }
      })(),
    );
    if (kill !== undefined) {
      timeline.push(
        (async () => {
          await sleep(kill);
          const victim = publisher;
          victim.killed = true;
          victim.proc.kill('SIGKILL');
          await victim.exited;
          at(`publisher killed (-9) after handing over ${next} messages`);
          await sleep(restartAfterMs);
          // The rest of the messages, at the same rate, from where the killed process stopped.
          firstOfRun = next;
          startPublisher(next, messages - next, performance.now());
          at('publisher restarted on the same outbox');
        })(),
      );
    }
    await Promise.all(timeline);
    if (mode === 'cli') await feeding;
    else {
      // The library publisher says E when it has handed everything over.
      while (next < messages) {
        if (publisher.proc.exitCode !== null && !publisher.killed) throw new Error(`the publisher exited with ${publisher.proc.exitCode}: ${publisher.stderr()}`);
        await sleep(100);
      }
    }
    result.handed = next;
    at('every message handed over');

    // Every accepted message received, or the deadline.
    const missing = () => [...result.accepted].filter((n) => !result.received.has(n)).length;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, deadlineMs);
      onReceived = () => {
        if (missing() === 0) {
          clearTimeout(timer);
          resolve();
        }
      };
      onReceived();
    });
    at('every accepted message received (or the deadline)');
    // The gateway drains and exits at the end of its stdin; the library publisher is stopped here.
    if (mode === 'cli') {
      // It exits by itself once everything is delivered; a run that lost something stops it.
      const stop = setTimeout(() => publisher.proc.kill('SIGTERM'), missing() === 0 ? 30_000 : 1000);
      result.gatewayExit = await publisher.exited;
      clearTimeout(stop);
      result.gatewayStderr = publisher.stderr().split('\n').filter((l) => l.startsWith('gateway:')).join('\n');
    } else {
      publisher.proc.kill('SIGTERM');
      await publisher.exited;
    }
    const receivedTotal = [...result.received.values()].reduce((a, b) => a + b, 0);
    return {
      mode,
      messages,
      handed: result.handed,
      accepted: result.accepted.size,
      refused: result.refused,
      dropped: result.dropped,
      lost: missing(),
      lostIds: [...result.accepted].filter((n) => !result.received.has(n)).slice(0, 20),
      receivedUnique: result.received.size,
      duplicates: receivedTotal - result.received.size,
      // Sent twice by the publisher (a new PUBLISH each time): at most the deliveries it reported as possible duplicates.
      publisherDuplicates: result.publisherDuplicates,
      // Sent twice by the broker to the subscriber (DUP flag), after a broker restart: not the publisher's doing.
      brokerDuplicates: result.brokerDuplicates,
      reportedDelivered: result.reportedDelivered.size,
      reportedPossibleDuplicates: result.reportedPossibleDuplicates,
      recoveredPossibleDuplicates: result.recoveredPossibleDuplicates,
      outOfOrder: result.outOfOrder,
      outOfOrderIds: result.outOfOrderIds,
      seconds: (performance.now() - t0) / 1000,
      events: result.events,
      ...(mode === 'cli' ? { gatewayExit: result.gatewayExit, gatewaySummary: result.gatewayStderr } : {}),
      publisherStderr: publisher.stderr().slice(-2000),
      ...(process.env.SF_DEBUG ? { subLines, publisherLines } : {}),
    };
  } finally {
    for (const stop of stopping.reverse()) await stop().catch(() => undefined);
    log(`(work dir ${work} removed)`);
    rmSync(work, { recursive: true, force: true });
  }
}
