/**
 * Canaries of the upstream defects we contain (docs/upstream.md): each runs the minimal reproduction against the
 * package installed and expects the defect. When an upgrade fixes it, the canary fails on purpose, saying so: review
 * the containment then (keep it as defence in depth, or remove it), and update docs/upstream.md.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SHORT_PUBLISH = fileURLToPath(new URL('../fixtures/mqttjs-short-publish.cjs', import.meta.url));

describe('upstream canaries', () => {
  it('mqtt.js still dies on a QoS 1 PUBLISH without a packet identifier (why src/connector/packet-guard.ts exists)', () => {
    const run = spawnSync(process.execPath, [SHORT_PUBLISH], { encoding: 'utf8', timeout: 20_000 });
    const fixed = run.status === 0 && run.stdout.includes('survived');
    expect(fixed, 'mqtt.js no longer dies on the short PUBLISH: review the packet guard and docs/upstream.md').toBe(false);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('ERR_INVALID_ARG_TYPE');
    expect(run.stderr).toContain('writeNumberCached');
  });
});
