/**
 * A game day against an emulator given by endpoint, at its defaults: a persistent session's queue is delivered at the
 * cloud's pace (a first batch 5 to 10 s after the reconnect, then 30 every 5 s) and bounded. After a broker restart the
 * backend subscriber's backlog is still queued at the broker when the run ends: those messages are not lost. The run
 * waits for the backlog (backlogTimeoutMs), ends the wait on its signal (Ctrl+C), and counts what the broker still
 * queues as `queued` (read from GET /_emulator/queue). Before this, such runs counted them lost (121 of 1,585 in one).
 *
 * Which of the subscriber and the devices comes back first after a restart is a race (the subscriber retries every
 * 250 ms; a connector device after its backoff): the test decides it. The broker is reached through a relay that
 * holds the subscriber's reconnects for a few seconds after the restart, so the devices are back and publishing
 * before it, and what they publish meanwhile is queued for it, as on a loaded machine.
 */
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { runSimulation, simulationFailure, type SimulationOptions } from '../../src/simulator/run.js';
import { parseScenario } from '../../src/simulator/scenario.js';
import type { FaultReport, SimulationReport } from '../../src/simulator/report-format.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import { useEmulator } from '../helpers/emulator.js';

const RESTART = parseScenario({ name: 'restart', faults: [{ at: 2, kind: 'broker-restart', down: 1 }] });

/** The backend subscriber's ClientIds (consumer.ts) carry this. */
const CONSUMER_MARK = Buffer.from('@@@sim-backend-');

/**
 * A TCP relay to the broker that lets the backend subscriber's first two connections through (the one that clears
 * its session, the persistent one), and holds each later one (its reconnects after the restart) until `holdMs` after
 * the first of them: it then reaches the broker that long after the devices.
 */
async function startHoldingRelay(brokerUrl: string, holdMs: number): Promise<{ url: string; held: () => number; close: () => Promise<void> }> {
  const { hostname, port } = new URL(brokerUrl);
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let consumerConnects = 0;
  let holdUntil: number | undefined;
  let held = 0;
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    client.once('data', (first: Buffer) => {
      client.pause();
      let wait = 0;
      if (first.includes(CONSUMER_MARK)) {
        consumerConnects += 1;
        if (consumerConnects === 3) holdUntil = Date.now() + holdMs;
        if (holdUntil !== undefined) wait = Math.max(0, holdUntil - Date.now());
        if (wait > 0) held += 1;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (client.destroyed) return;
        const upstream = connect(Number(port), hostname);
        sockets.add(upstream);
        upstream.on('close', () => {
          sockets.delete(upstream);
          client.destroy();
        });
        upstream.on('error', () => undefined);
        client.on('close', () => upstream.destroy());
        upstream.write(first);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      }, wait);
      timers.add(timer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held: () => held,
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function deliveryOf(report: SimulationReport): NonNullable<SimulationReport['delivery']> {
  if (!report.delivery) throw new Error('no delivery count');
  return report.delivery;
}

describe('a game day against an emulator at its default pace (given by endpoint): the subscriber\'s backlog is queued, not lost', () => {
  // The emulator's defaults (paced, bounded), as `apsaramq-device emulator` runs; only its OpenAPI's rate is raised.
  const emulator = useEmulator({ qpsLimit: 10_000 });

  /** Run the game day through a relay that holds the subscriber back `holdMs` after the restart. */
  async function playRestart(groupId: string, holdMs: number, more: Partial<SimulationOptions>): Promise<{ report: SimulationReport; held: number }> {
    const relay = await startHoldingRelay(emulator().mqttUrl, holdMs);
    try {
      const report = await runSimulation({
        target: { ...emulatorTarget(emulator()), brokerUrl: relay.url },
        groupId,
        devices: 10,
        connectRate: 0,
        apiQps: 10_000,
        publishIntervalMs: 200,
        durationMs: 12_000,
        drainTimeoutMs: 1_000,
        random: () => 0.1,
        client: 'connector',
        scenario: RESTART,
        ...more,
      });
      return { report, held: relay.held() };
    } finally {
      await relay.close();
    }
  }

  /** What every run here shows: the restart healed, nothing lost, every message accounted for. */
  function expectAccounted(report: SimulationReport, held: number): NonNullable<SimulationReport['delivery']> {
    expect(held).toBeGreaterThan(0);
    // Every device it found online it hit (one still on its first CONNECT at 2 s is offline at its start), all back.
    const restart = report.faults?.[0] as FaultReport;
    expect(restart).toMatchObject({ kind: 'broker-restart', targeted: 10, notHealed: 0, errors: {} });
    expect(restart.hit + restart.offlineAtStart).toBe(10);
    expect(restart.healed).toBe(restart.hit);
    const delivery = deliveryOf(report);
    expect(delivery).toMatchObject({ lost: 0, maybeQueued: 0, refused: 0, foreign: 0 });
    expect(delivery.accepted).toBeGreaterThan(300);
    expect(delivery.delivered + delivery.held + delivery.queued).toBe(delivery.accepted);
    expect(report.faults?.[0]?.messages).toMatchObject({ lost: 0, maybeQueued: 0 });
    expect(simulationFailure(report)).toBeUndefined();
    return delivery;
  }

  it('without a wait (backlogTimeoutMs 0): what the broker still queues for the subscriber is queued, none lost; it says so before it starts', async () => {
    const warnings: string[] = [];
    const { report, held } = await playRestart('GID_gdbq', 4_000, { backlogTimeoutMs: 0, onWarning: (m) => warnings.push(m) });
    const delivery = expectAccounted(report, held);
    // Queued for 4 s while the devices published (50 a second together), then paced: 30 per 5 s from 5 to 10 s on.
    expect(delivery.queued).toBeGreaterThan(60);
    // The restart's share: its devices' messages from its start until they were back.
    expect(report.faults?.[0]?.messages?.queued).toBeGreaterThan(0);
    expect(report.faults?.[0]?.messages?.queued).toBeLessThanOrEqual(delivery.queued);
    expect(warnings.some((w) => /^The emulator at http:\/\/\S+ delivers a resumed persistent session's queue at the cloud's pace .* and bounds it \(1000 messages, 8388608 bytes, drop-oldest/.test(w))).toBe(true);
  }, 60_000);

  it('with a wait: the backlog drains while the run waits, watched by its arrivals and the queue\'s count; the wait ends once the queue is empty', async () => {
    const warnings: string[] = [];
    let waitingSince = 0;
    const { report, held } = await playRestart('GID_gdbw', 2_000, {
      backlogTimeoutMs: 60_000,
      onWarning: (m) => {
        warnings.push(m);
        if (m.startsWith('The backend subscriber still misses')) waitingSince = Date.now();
      },
    });
    const delivery = expectAccounted(report, held);
    expect(delivery.queued).toBe(0);
    expect(delivery.delivered + delivery.held).toBe(delivery.accepted);
    expect(warnings.filter((w) => /^The backend subscriber still misses \d+ messages \(its queue at the broker holds \d+\): waiting up to 60 s/.test(w))).toHaveLength(1);
    // Ended by the queue (or the last arrival), well before its deadline.
    expect(Date.now() - waitingSince).toBeLessThan(50_000);
  }, 120_000);

  it('Ctrl+C (the run\'s signal) ends the wait at once: what is still queued is queued, not lost', async () => {
    const stop = new AbortController();
    let abortedAt = 0;
    const { report, held } = await playRestart('GID_gdbc', 4_000, {
      backlogTimeoutMs: 60_000,
      signal: stop.signal,
      onWarning: (m) => {
        if (!m.startsWith('The backend subscriber still misses')) return;
        abortedAt = Date.now();
        stop.abort();
      },
    });
    expect(abortedAt).toBeGreaterThan(0);
    expect(Date.now() - abortedAt).toBeLessThan(4_000);
    const delivery = expectAccounted(report, held);
    expect(delivery.queued).toBeGreaterThan(0);
  }, 60_000);
});
