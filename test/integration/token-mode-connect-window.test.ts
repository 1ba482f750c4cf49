/**
 * Token mode (reference §5.3): a token revoked (RevokeToken) or run out while a CONNECT that logged in with it is
 * between its login and its CONNACK does not leave a session up. The login was decided with the token valid; the
 * session is answered (CONNACK 0: the CONNECT was accepted), then, at once, gets `$SYS/tokenInvalidNotice` with code 3
 * (revoked) or 2 (expired), then the disconnect (MQTT 5: DISCONNECT 0x87), as a live session does: the broker checks
 * a session's tokens again when its CONNACK is out (broker-token-sessions.ts `ready`). The same order as
 * `kickOnRevoke`'s for a device credential (emulator-revoke-kick.test.ts). Each window is forced: the CONNECT held
 * where aedes asks the authenticate hook, or where it asks the session store (helpers/takeover.ts). In one process, and
 * on a cluster's Redis with the token revoked through another process.
 */
import { describe, expect, it, onTestFinished } from 'vitest';
import { clientById } from '../../src/emulator/aedes-adapter.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import { ANY_GROUP, callApi, clientLeaves, startForTest } from '../helpers/emulator.js';
import { connectPacket, rawSocket } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';
import { holdAuthenticate, holdConnect, type HeldConnect } from '../helpers/takeover.js';

/** The emulators' clock: real time plus a skew a test moves (kept well inside the gateway's ±15 min window). */
let skew = 0;
const now = (): number => Date.now() + skew;
const OPTIONS = { env: {}, ...ANY_GROUP, wsPort: false, parentTopics: ['demo'], now } as const satisfies EmulatorOptions;
const LIFETIME_MS = 10 * 60_000;

function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  return startForTest({ ...OPTIONS, ...options });
}

const VERSIONS = [4, 5] as const;
type Version = (typeof VERSIONS)[number];

/** What happens to the token while the CONNECT is held: revoked through `api`, or run out (the clock moved past it). */
type Fate = { revokedThrough: Emulator } | 'expired';

/**
 * An R token applied through `api`; a Token-mode CONNECT with it to `e`, held by `holdAt` between its login and its
 * CONNACK while the token meets its `fate`; then let go: CONNACK 0, the notice with `code`, the disconnect.
 */
async function heldTokenConnect(e: Emulator, clientId: string, version: Version, holdAt: (e: Emulator, clientId: string) => HeldConnect, fate: Fate, code: number): Promise<void> {
  skew = 0;
  onTestFinished(() => {
    skew = 0;
  });
  const api = fate === 'expired' ? e : fate.revokedThrough;
  const expireTime = Math.floor(now()) + LIFETIME_MS;
  const { Token: token } = await callApi<{ Token: string }>(api, 'ApplyToken', { Resources: 'demo/#', InstanceId: api.instanceId, ExpireTime: String(expireTime), Actions: 'R' });
  const hold = holdAt(e, clientId);
  const raw = await rawSocket(e.mqttUrl, version);
  raw.send(connectPacket({ clientId, username: `Token|${e.accessKeyId}|${e.instanceId}`, password: `R|${token}` }, version));
  await hold.held;
  if (fate === 'expired') skew = expireTime - Date.now();
  else await callApi(fate.revokedThrough, 'RevokeToken', { Token: token, InstanceId: api.instanceId });
  const left = clientLeaves(e, clientId);
  hold.release();
  await raw.closed;
  const seen = raw.received.map((p) => (p.cmd === 'connack' ? `connack ${p.returnCode ?? p.reasonCode}` : p.cmd === 'publish' ? `publish ${p.topic} ${p.payload.toString()}` : p.cmd === 'disconnect' ? `disconnect 0x${(p.reasonCode ?? 0).toString(16)}` : p.cmd));
  const notice = `publish $SYS/tokenInvalidNotice {"code":${code},"type":"R"}`;
  expect(seen).toEqual(version === 5 ? ['connack 0', notice, 'disconnect 0x87'] : ['connack 0', notice]);
  await left;
  expect(clientById(e.broker, clientId), 'nothing registered').toBeUndefined();
  expect(e.stats().mqtt.rules).toMatchObject({ tokenInvalid: 1 });
}

describe('Token mode: a token that stops being valid between a CONNECT\'s login and its CONNACK', () => {
  it.each(VERSIONS)('MQTT %i: revoked before aedes authenticates the CONNECT', async (version) => {
    const e = await startOwn();
    await heldTokenConnect(e, `GID_tw@@@auth${version}`, version, holdAuthenticate, { revokedThrough: e }, 3);
  });

  it.each(VERSIONS)('MQTT %i: revoked while aedes asks the session store', async (version) => {
    const e = await startOwn();
    await heldTokenConnect(e, `GID_tw@@@conn${version}`, version, holdConnect, { revokedThrough: e }, 3);
  });

  it.each(VERSIONS)('MQTT %i: run out while aedes asks the session store', async (version) => {
    await heldTokenConnect(await startOwn(), `GID_tw@@@exp${version}`, version, holdConnect, 'expired', 2);
  });
});

const { available, skipped } = redisAvailable();

describe.skipIf(!available)(`the same, clustered, revoked through another process${skipped}`, () => {
  it.each(VERSIONS)('MQTT %i: revoked before aedes authenticates the CONNECT', async (version) => {
    const { url } = await startRedis();
    const [a, b] = [await startOwn({ redis: url }), await startOwn({ redis: url })];
    await heldTokenConnect(a, `GID_tw@@@cauth${version}`, version, holdAuthenticate, { revokedThrough: b }, 3);
  });

  it.each(VERSIONS)('MQTT %i: revoked while aedes asks the session store', async (version) => {
    const { url } = await startRedis();
    const [a, b] = [await startOwn({ redis: url }), await startOwn({ redis: url })];
    await heldTokenConnect(a, `GID_tw@@@cconn${version}`, version, holdConnect, { revokedThrough: b }, 3);
  });
});
