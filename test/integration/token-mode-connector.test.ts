/**
 * Issue 13's "Done when", end to end: a device on the library's connector in Token mode against the emulator, with
 * tokens applied through the Provisioner (pop-core underneath) and the session queries asked through it too. The
 * device connects with tokens, publishes within its W resources and is refused outside them, renews its tokens in
 * session without a new CONNECT, is disconnected with the documented notice after RevokeToken and comes back with
 * fresh tokens; the session queries follow it. Clocks are injected (the emulator's `now`, the connector's
 * `token.now`, the source's `now`): nothing waits for real minutes.
 */
import type { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import type { TokenRequest, TokenSource } from '../../src/credential.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import type { IssuedToken } from '../../src/provisioner/token.js';
import type { TokenGrant } from '../../src/signer/mqtt.js';
import { ANY_GROUP } from '../helpers/emulator.js';

const MINUTE = 60_000;

/**
 * The next `name` event's arguments. Unlike events.once it does not listen to 'error' (which would make the
 * connection emit its errors, and reject here).
 */
function once(emitter: EventEmitter | DeviceConnection<'Token'>, name: string): Promise<unknown[]> {
  return new Promise((resolve) => (emitter as EventEmitter).once(name, (...args: unknown[]) => resolve(args)));
}

/** One clock for the emulator, the connector and the token source: real time plus a skew the test moves. */
function testClock(): { now: () => number; advance: (ms: number) => void } {
  let skew = 0;
  return {
    now: () => Date.now() + skew,
    advance: (ms) => {
      skew += ms;
    },
  };
}

interface World {
  e: Emulator;
  provisioner: Provisioner;
  clock: ReturnType<typeof testClock>;
}

async function world(options: EmulatorOptions = {}): Promise<World> {
  const clock = testClock();
  const e = await startEmulator({ env: {}, ...ANY_GROUP, wsPort: false, now: clock.now, parentTopics: ['demo', 'other'], ...options });
  onTestFinished(() => e.close());
  const provisioner = new Provisioner({ endpoint: e.apiEndpoint, instanceId: e.instanceId, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, retry: false });
  onTestFinished(() => provisioner.close());
  return { e, provisioner, clock };
}

/** A source over the provisioner's, recording each request and every token it handed out (newest last). */
function recording(inner: TokenSource): TokenSource & { requests: Omit<TokenRequest, 'signal'>[]; issued: IssuedToken[]; gate?: Promise<void> } {
  const source = Object.assign(
    async (request: TokenRequest) => {
      const { signal: _signal, ...rest } = request;
      source.requests.push(rest);
      if (request.reason === 'rejected' && source.gate) await source.gate;
      const tokens = (await inner(request)) as IssuedToken[];
      source.issued.push(...tokens);
      return tokens;
    },
    { requests: [] as Omit<TokenRequest, 'signal'>[], issued: [] as IssuedToken[] } as { requests: Omit<TokenRequest, 'signal'>[]; issued: IssuedToken[]; gate?: Promise<void> },
  );
  return source;
}

/** Count the broker's accepted CONNECTs of a ClientId from now on. */
function connects(e: Emulator, clientId: string): { readonly count: number } {
  const counter = { count: 0 };
  const listener = (id: string): void => {
    if (id === clientId) counter.count += 1;
  };
  e.events.on('clientConnected', listener);
  onTestFinished(() => {
    e.events.off('clientConnected', listener);
  });
  return counter;
}

/** Resolves on the next emulator event of this ClientId. */
function next(e: Emulator, event: 'clientConnected' | 'clientDisconnected', clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const listener = (id: string): void => {
      if (id !== clientId) return;
      e.events.off(event, listener);
      resolve();
    };
    e.events.on(event, listener);
  });
}

/** Resolves with the next message the broker routes on `topic`. */
function routed(e: Emulator, topic: string): Promise<string> {
  return new Promise((resolve) => {
    const listener = (message: { topic: string; payload: Buffer }): void => {
      if (message.topic !== topic) return;
      e.events.off('published', listener);
      resolve(message.payload.toString());
    };
    e.events.on('published', listener);
  });
}

async function connectWithTokens(w: World, clientId: string, source: TokenSource | readonly TokenGrant[], extra: { protocolVersion?: 4 | 5; renewBeforeMs?: number } = {}): Promise<DeviceConnection<'Token'>> {
  const conn = await connectDevice({
    clientId,
    brokerUrl: w.e.mqttUrl,
    protocolVersion: extra.protocolVersion ?? 4,
    reconnect: { minDelayMs: 5, maxDelayMs: 20 },
    takeover: false,
    token: { accessKeyId: w.e.accessKeyId, instanceId: w.e.instanceId, source, now: w.clock.now, ...(extra.renewBeforeMs === undefined ? {} : { renewBeforeMs: extra.renewBeforeMs }) },
  });
  onTestFinished(() => conn.end(true));
  return conn;
}

describe('a device in Token mode, end to end', () => {
  it.each([4, 5] as const)('connects, publishes within W and is refused outside it, renews in session, is revoked and comes back (MQTT %s)', async (protocolVersion) => {
    const w = await world();
    const { e, provisioner, clock } = w;
    const clientId = `GID_tok@@@e2e-${protocolVersion}`;
    const source = recording(provisioner.tokenSource([{ actions: 'W', resources: ['demo/out/#'] }, { actions: 'R', resources: ['demo/in'] }], { lifetimeMs: 10 * MINUTE, now: clock.now }));
    const events: string[] = [];
    const conn = await connectWithTokens(w, clientId, source, { protocolVersion });
    for (const name of ['online', 'offline', 'auth-failed', 'token-invalid', 'token-renewed'] as const) {
      conn.on(name, (info?: unknown) => events.push(info === undefined ? name : `${name} ${JSON.stringify(info)}`));
    }
    expect(conn.mode).toBe('Token');
    expect(conn.credential).toBeUndefined();
    expect(conn.tokens.map((t) => t.type)).toEqual(['R', 'W']);
    expect(source.requests).toEqual([{ reason: 'connect', types: [] }]);
    expect(await provisioner.isOnline(clientId)).toBe(true);

    // Within the W token: routed. Subscribing within the R token: granted.
    const inside = routed(e, 'demo/out/a');
    await conn.publish('demo/out/a', 'inside', { qos: 1 });
    expect(await inside).toBe('inside');
    expect((await conn.subscribe('demo/in')).map((g) => g.qos)).toEqual([1]);

    // Outside: the broker's notice (code 4), the disconnect; the message fails at once, the device comes back with the
    // same tokens (they are still valid).
    const cut = next(e, 'clientDisconnected', clientId);
    const back = once(conn, 'online');
    const refused = await conn.publish('other/x', 'outside', { qos: 1 }).then(() => undefined, (error: unknown) => error);
    expect(isApsaraMqDeviceError(refused, 'PublishRejected')).toBe(true);
    expect((refused as Error).message).toContain('$SYS/tokenInvalidNotice code 4, W token');
    await cut;
    await back;
    expect(events.slice(0, 3)).toEqual(['token-invalid {"code":4,"type":"W"}', 'offline', 'online {"sessionPresent":false}']);
    expect(source.requests).toHaveLength(1);

    // Renewal in session: five minutes before expiry the broker says so; the device applies for new tokens and uploads
    // them, and the session goes on: no new CONNECT.
    events.length = 0;
    const counted = connects(e, clientId);
    const connacks = e.stats().mqtt.connacks;
    const renewed = once(conn, 'token-renewed');
    clock.advance(5 * MINUTE + 30_000);
    e.checkTokens();
    expect((await renewed)[0]).toEqual({ types: ['R', 'W'], inSession: true });
    // One renewal for both notices (R and W), each type applied for once.
    expect(source.requests.slice(1)).toEqual([{ reason: 'renew', types: ['R', 'W'] }]);
    expect(counted.count).toBe(0);
    expect(e.stats().mqtt.connacks).toEqual(connacks);
    // The old tokens run out (and the new ones are not yet within their notice lead): the session holds the new ones
    // and is not disconnected.
    clock.advance(4 * MINUTE + 31_000);
    e.checkTokens();
    const after = routed(e, 'demo/out/b');
    await conn.publish('demo/out/b', 'with the renewed W token', { qos: 1 });
    expect(await after).toBe('with the renewed W token');
    expect(counted.count).toBe(0);
    expect(conn.state).toBe('online');

    // RevokeToken: the notice (code 3), the disconnect; offline until the source hands out a new W token, then online.
    let open: () => void = () => undefined;
    source.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const revokedW = source.issued.filter((t) => t.type === 'W').at(-1) as IssuedToken;
    const gone = next(e, 'clientDisconnected', clientId);
    const invalid = once(conn, 'token-invalid');
    await provisioner.revokeToken(revokedW);
    expect((await invalid)[0]).toEqual({ code: 3, type: 'W' });
    await gone;
    expect(await provisioner.isOnline(clientId)).toBe(false);
    expect((await provisioner.onlineStatus([clientId]))[0]).toEqual({ clientId, online: false });
    const returned = next(e, 'clientConnected', clientId);
    open();
    await returned;
    expect(await provisioner.isOnline(clientId)).toBe(true);
    expect(source.requests.at(-1)).toEqual({ reason: 'rejected', types: ['W'], code: 3 });
    const fresh = routed(e, 'demo/out/c');
    await conn.publish('demo/out/c', 'with a fresh W token', { qos: 1 });
    expect(await fresh).toBe('with a fresh W token');
    expect(events).toContain('token-renewed {"types":["W"],"inSession":false}');

    const ended = next(e, 'clientDisconnected', clientId);
    await conn.end();
    await ended;
    expect(await provisioner.isOnline(clientId)).toBe(false);
  });

  it('a SUBSCRIBE outside the R token fails with SubscribeRejected; the session comes back', async () => {
    const w = await world();
    const source = w.provisioner.tokenSource([{ actions: 'R', resources: ['demo/in'] }], { now: w.clock.now });
    const conn = await connectWithTokens(w, 'GID_tok@@@sub-out', source);
    const back = once(conn, 'online');
    const refused = await conn.subscribe('demo/#').then(() => undefined, (error: unknown) => error);
    expect(isApsaraMqDeviceError(refused, 'SubscribeRejected')).toBe(true);
    expect((refused as Error).message).toContain('no token of the session covers it ($SYS/tokenInvalidNotice code 4, R token)');
    await back;
  });

  it('renews by its own timer (no notice from the broker) and uploads in session', async () => {
    // Lead 0: the broker sends no expire notice, so only the connector's timer can renew.
    const w = await world({ tokenExpireNoticeLeadMs: 0 });
    const clientId = 'GID_tok@@@timer';
    const source = recording(w.provisioner.tokenSource([{ actions: 'W', resources: ['demo/#'] }], { lifetimeMs: 10 * MINUTE, now: w.clock.now }));
    const conn = await connectWithTokens(w, clientId, source);
    const counted = connects(w.e, clientId);
    // The clock jumps past the renewal time; a reconnect makes the connection look at its timer again.
    w.clock.advance(5 * MINUTE + 30_000);
    const renewed = once(conn, 'token-renewed');
    w.e.disconnect(clientId);
    expect((await renewed)[0]).toEqual({ types: ['W'], inSession: true });
    expect(counted.count).toBe(1); // the reconnect after the cut, none for the renewal
    expect(source.requests.map((r) => r.reason)).toEqual(['connect', 'renew']);
  });

  it('a refused CONNECT climbs the ladder: the source is asked again and the new tokens are used', async () => {
    const w = await world();
    const good = await w.provisioner.applyToken({ resources: ['demo/#'], actions: 'W', expireTime: w.clock.now() + 10 * MINUTE });
    const revoked = await w.provisioner.applyToken({ resources: ['demo/#'], actions: 'W', expireTime: w.clock.now() + 10 * MINUTE });
    await w.provisioner.revokeToken(revoked);
    const requests: string[] = [];
    const source: TokenSource = async (request) => {
      requests.push(request.reason);
      return request.reason === 'connect' ? [revoked] : [good];
    };
    const conn = await connectDevice({
      clientId: 'GID_tok@@@ladder',
      brokerUrl: w.e.mqttUrl,
      token: { accessKeyId: w.e.accessKeyId, instanceId: w.e.instanceId, source },
    });
    onTestFinished(() => conn.end(true));
    expect(requests).toEqual(['connect', 'rejected']);
    expect(w.e.stats().mqtt.connacks).toMatchObject({ '0': 1, '5': 1 });
  });

  it('the same refused tokens again end with TokenRejected; a source that never gives good ones too, after the bounded ladder', async () => {
    const w = await world();
    const revoked = await w.provisioner.applyToken({ resources: ['demo/#'], actions: 'W', expireTime: w.clock.now() + 10 * MINUTE });
    await w.provisioner.revokeToken(revoked);
    const same = await connectDevice({ clientId: 'GID_tok@@@same', brokerUrl: w.e.mqttUrl, token: { accessKeyId: w.e.accessKeyId, instanceId: w.e.instanceId, source: [revoked] } }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(isApsaraMqDeviceError(same, 'TokenRejected')).toBe(true);
    expect((same as Error).message).toContain('the token source handed out the same tokens again');
    expect((same as { connackCode?: number }).connackCode).toBe(5);

    let asked = 0;
    const worse: TokenSource = async () => {
      asked += 1;
      return [await w.provisioner.applyToken({ resources: ['demo/#'], actions: 'W', expireTime: w.clock.now() + 10 * MINUTE }).then(async (t) => {
        await w.provisioner.revokeToken(t);
        return t;
      })];
    };
    const exhausted = await connectDevice({ clientId: 'GID_tok@@@worse', brokerUrl: w.e.mqttUrl, token: { accessKeyId: w.e.accessKeyId, instanceId: w.e.instanceId, source: worse } }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(isApsaraMqDeviceError(exhausted, 'TokenRejected')).toBe(true);
    expect(asked).toBe(4); // connect + MAX_REFETCHES
  });

  it('fixed tokens that expire in session: the notice (code 2), then TokenRejected, as nothing can replace them', async () => {
    const w = await world();
    const token = await w.provisioner.applyToken({ resources: ['demo/#'], actions: 'W', expireTime: w.clock.now() + 10 * MINUTE });
    const conn = await connectWithTokens(w, 'GID_tok@@@fixed', [token]);
    const closed = once(conn, 'closed');
    const invalid = once(conn, 'token-invalid');
    w.clock.advance(10 * MINUTE);
    w.e.checkTokens();
    expect((await invalid)[0]).toEqual({ code: 2, type: 'W' });
    const [{ error }] = (await closed) as [{ error?: Error }];
    expect(isApsaraMqDeviceError(error, 'TokenRejected')).toBe(true);
    expect(error?.message).toContain('$SYS/tokenInvalidNotice code 2, W token');
  });

  it('a source that answers something else than tokens: InvalidToken before any CONNECT', async () => {
    const w = await world();
    const bad = (answer: unknown): Promise<unknown> =>
      connectDevice({ clientId: 'GID_tok@@@bad', brokerUrl: w.e.mqttUrl, token: { accessKeyId: w.e.accessKeyId, instanceId: w.e.instanceId, source: async () => answer as TokenGrant[] } }).then(
        () => undefined,
        (error: unknown) => error,
      );
    for (const answer of [undefined, [], [{ type: 'X', token: 't' }], [{ type: 'W', token: 'a|b' }], [{ type: 'W', token: 'a' }, { type: 'W', token: 'b' }]]) {
      expect(isApsaraMqDeviceError(await bad(answer), 'InvalidToken'), JSON.stringify(answer)).toBe(true);
    }
    expect(w.e.stats().mqtt.connacks).toEqual({});
  });

  it('checks the token options before any I/O', async () => {
    const w = await world();
    let asked = 0;
    const source: TokenSource = async () => {
      asked += 1;
      return [];
    };
    const base = { clientId: 'GID_tok@@@opts', brokerUrl: w.e.mqttUrl, token: { accessKeyId: w.e.accessKeyId, instanceId: w.e.instanceId, source } };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ clientId: 'not-a-client-id' }, /ClientId/],
      [{ token: { ...base.token, accessKeyId: '' } }, /token.accessKeyId/],
      [{ token: { ...base.token, accessKeyId: 'a|b' } }, /token.accessKeyId/],
      [{ token: { ...base.token, instanceId: 'bad id' } }, /instance/i],
      [{ token: { ...base.token, source: 'tokens' } }, /token.source must be a function/],
      [{ token: { ...base.token, source: [] } }, /holds no token/],
      [{ token: { ...base.token, renewBeforeMs: -1 } }, /token.renewBeforeMs/],
      [{ token: { ...base.token, now: 5 } }, /token.now/],
      [{ token: 'x' }, /Option token must be/],
      [{ credential: async () => undefined }, /credential and token cannot be used together/],
      [{ protocolVersion: 3 }, /protocolVersion/],
    ];
    for (const [override, expected] of cases) {
      await expect(connectDevice({ ...base, ...override } as never), JSON.stringify(override)).rejects.toThrow(expected);
    }
    expect(asked).toBe(0);
    expect(w.e.stats().mqtt.connacks).toEqual({});
    const { registerAndConnect } = await import('../../src/register-and-connect.js');
    await expect(registerAndConnect({ ...w.provisioner, endpoint: w.e.apiEndpoint, instanceId: w.e.instanceId, clientId: 'GID_tok@@@rac', token: base.token } as never)).rejects.toThrow(/for Token mode use connectDevice/);
  });

  it('never shows a token: inspect, JSON, events, errors and the logger (mqtt.js debug lines included)', async () => {
    const w = await world();
    const lines: string[] = [];
    const log = (...args: unknown[]): void => {
      lines.push(inspect(args, { depth: 5 }));
    };
    const logger = { debug: log, info: log, warn: log, error: log };
    const source = recording(w.provisioner.tokenSource([{ actions: 'W', resources: ['demo/out'] }], { lifetimeMs: 10 * MINUTE, now: w.clock.now }));
    const conn = await connectDevice({ clientId: 'GID_tok@@@secret', brokerUrl: w.e.mqttUrl, logger, token: { accessKeyId: w.e.accessKeyId, instanceId: w.e.instanceId, source, now: w.clock.now } });
    onTestFinished(() => conn.end(true));
    const renewed = once(conn, 'token-renewed');
    w.clock.advance(5 * MINUTE + 1_000);
    w.e.checkTokens();
    const [info] = await renewed;
    const refused = await conn.publish('demo/elsewhere', 'x', { qos: 1 }).then(() => undefined, (error: unknown) => error);
    const shown = [inspect(conn), JSON.stringify(conn), JSON.stringify(info), inspect(refused), JSON.stringify(refused), ...lines].join('\n');
    expect(source.issued.length).toBe(2);
    for (const token of source.issued) expect(shown).not.toContain(token.token);
    expect(lines.some((line) => line.includes('[mqtt.js]'))).toBe(true);
    expect(inspect(conn)).toContain("mode: 'Token'");
  });

  it('apsaramq-device/testing waits for a Token-mode device to come and go (its waitForOnline follows the broker, whatever the mode)', async () => {
    const { startTestEmulator } = await import('../../src/testing/index.js');
    const emu = await startTestEmulator({ parentTopics: ['demo'], groups: ['GID_tok'] });
    onTestFinished(() => emu.stop());
    const provisioner = new Provisioner({ ...emu.provisionerOptions, retry: false });
    onTestFinished(() => provisioner.close());
    const clientId = 'GID_tok@@@testing';
    const online = emu.waitForOnline(clientId);
    const conn = await connectDevice({ clientId, brokerUrl: emu.mqttUrl, token: { accessKeyId: emu.accessKeyId, instanceId: emu.instanceId, source: provisioner.tokenSource([{ actions: 'W', resources: ['demo/#'] }]) } });
    await online;
    expect(await provisioner.isOnline(clientId)).toBe(true);
    const offline = emu.waitForOffline(clientId);
    await conn.end();
    await offline;
    expect(await provisioner.isOnline(clientId)).toBe(false);
  });
});
