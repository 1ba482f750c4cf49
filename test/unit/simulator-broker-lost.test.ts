import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/simulator/clock.js';
import { SimulationMetrics } from '../../src/simulator/metrics.js';
import { BROKER_LOST_MS, simulationFailure } from '../../src/simulator/run.js';

/** Metrics of three devices that connected at 0 on a manual clock. */
function online(): { clock: ManualClock; metrics: SimulationMetrics } {
  const clock = new ManualClock(0);
  const metrics = new SimulationMetrics({ clock, epochMs: Date.UTC(2026, 0, 1) });
  metrics.devices = 3;
  metrics.provisioned = 3;
  for (let i = 0; i < 3; i++) {
    metrics.firstConnack(0, 1);
    metrics.wentOnline();
  }
  return { clock, metrics };
}

/** Every device loses its session at the clock's now. */
function allLost(metrics: SimulationMetrics): void {
  for (let i = 0; i < 3; i++) {
    metrics.wentOffline();
    metrics.error('ConnectionLost');
  }
}

describe('a broker given by URL is lost for good: no device online, none able to reach it, for BROKER_LOST_MS', () => {
  it('judges it lost once every device has been offline that long and attempts since have failed to reach it', () => {
    const { clock, metrics } = online();
    clock.advance(1_000);
    allLost(metrics);
    clock.advance(2_000);
    metrics.error('BrokerUnreachable');
    clock.advance(BROKER_LOST_MS - 2_001);
    expect(metrics.judgeBrokerLost(BROKER_LOST_MS)).toBeUndefined(); // 1 ms short
    clock.advance(1);
    const loss = metrics.judgeBrokerLost(BROKER_LOST_MS);
    expect(loss).toEqual({ at: '2026-01-01T00:00:01.000Z', embeddedEmulator: false, cause: expect.stringMatching(/^No device could reach the broker for the last 5\.0 s of the run: all 3 that had connected lost their sessions by 2026-01-01T00:00:01\.000Z, and every attempt since failed \(1 BrokerUnreachable, 0 ConnectTimeout in all\)$/) });
  });

  it('is not lost while one device is online, before any connected, when the devices stopped trying (refused), or when one came back', () => {
    const { clock, metrics } = online();
    metrics.wentOffline();
    metrics.wentOffline();
    metrics.error('BrokerUnreachable');
    clock.advance(60_000);
    expect(metrics.judgeBrokerLost(BROKER_LOST_MS)).toBeUndefined();

    const never = new SimulationMetrics({ clock: new ManualClock(0) });
    never.error('BrokerUnreachable');
    expect(never.judgeBrokerLost(0)).toBeUndefined();

    const refused = online();
    allLost(refused.metrics);
    refused.metrics.error('PublishRejected:0x87');
    refused.clock.advance(60_000);
    expect(refused.metrics.judgeBrokerLost(BROKER_LOST_MS)).toBeUndefined();

    const back = online();
    allLost(back.metrics);
    back.metrics.error('ConnectTimeout');
    back.metrics.wentOnline();
    back.clock.advance(60_000);
    expect(back.metrics.judgeBrokerLost(BROKER_LOST_MS)).toBeUndefined();
  });

  it('a report with a lost broker fails the run, before any other verdict: BrokerLost, or EmulatorFailed for the embedded emulator', () => {
    const { metrics } = online();
    const report = metrics.report(10_000);
    expect(simulationFailure(report)).toBeUndefined();
    report.brokerLost = { at: '2026-01-01T00:00:01.000Z', embeddedEmulator: false, cause: 'No device could reach the broker' };
    expect(simulationFailure(report)).toMatchObject({ code: 'BrokerLost', retryable: true, message: expect.stringMatching(/^No device could reach the broker\. The broker stopped answering/) });
    report.brokerLost = { ...report.brokerLost, embeddedEmulator: true, cause: 'The embedded emulator (pid 7) exited on signal SIGKILL' };
    expect(simulationFailure({ ...report, errors: { TooManyOpenFiles: 1 } })).toMatchObject({ code: 'EmulatorFailed', message: expect.stringMatching(/^The embedded emulator \(pid 7\) exited on signal SIGKILL\./) });
  });
});
