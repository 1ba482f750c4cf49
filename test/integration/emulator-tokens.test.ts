import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { JOURNAL_FILE, STATE_FILE, readDataDirState } from '../../src/emulator/data-dir.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { tempDir } from '../helpers/cli.js';
import { ANY_GROUP, apiClient, apiFailure, callApi, commonParams, rawCall, signed, signedCall, useEmulator } from '../helpers/emulator.js';
import { officialCall, officialClient } from '../helpers/openapi-client.js';

const DAY = 24 * 60 * 60_000;
/** The emulator's token shape (its own choice, see src/emulator/token-registry.ts): Base64 of 49 bytes. */
const TOKEN = /^[A-Za-z0-9+/]{66}==$/;
const UUID_UPPER = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/;

interface ApplyBody {
  RequestId: string;
  Token: string;
}
interface QueryBody {
  RequestId: string;
  TokenStatus: boolean;
}

/** These tests name their topics freely (TopicA, T000…): any parent topic exists (ApplyToken refuses others). */
const ANY_PARENT = { ...ANY_GROUP, parentTopics: false } as const;

/** Start an emulator for this test only (closed when it ends). */
async function emulatorForTest(options: EmulatorOptions): Promise<Emulator> {
  const emulator = await startEmulator({ env: {}, ...ANY_PARENT, wsPort: false, ...options });
  onTestFinished(() => emulator.close());
  return emulator;
}

describe('Token actions through the real pop-core', () => {
  // The rate limits run on a frozen clock that each test moves a second on, so every test starts with full buckets
  // and no test races the wall clock. The emulator's own clock runs with the wall clock but can jump days ahead (the
  // gateway's timestamp window is widened so that signed requests still pass).
  let rate = 0;
  let offset = 0;
  const emuNow = (): number => Date.now() + offset;
  const emu = useEmulator({ ...ANY_PARENT, rateClock: () => rate, now: emuNow, timestampWindowMs: 100 * DAY, wsPort: false });
  beforeEach(() => {
    rate += 1_000;
    offset = 0;
  });

  const apply = (e: Emulator, extra: Record<string, string> = {}): Promise<ApplyBody> =>
    callApi<ApplyBody>(e, 'ApplyToken', { Resources: 'TopicA/+,TopicB', InstanceId: e.instanceId, ExpireTime: String(emuNow() + 3_600_000), Actions: 'R,W', ...extra });
  const query = (e: Emulator, token: string, method: 'POST' | 'GET' = 'POST'): Promise<boolean> =>
    callApi<QueryBody>(e, 'QueryToken', { Token: token, InstanceId: e.instanceId }, method).then((body) => body.TokenStatus);

  it('ApplyToken issues a token that QueryToken reports valid until RevokeToken; revoking twice is fine', async () => {
    const e = emu();
    const applied = await apply(e);
    expect(Object.keys(applied).sort()).toEqual(['RequestId', 'Token']);
    expect(applied.RequestId).toMatch(UUID_UPPER);
    expect(applied.Token).toMatch(TOKEN);

    const queried = await callApi<QueryBody>(e, 'QueryToken', { Token: applied.Token, InstanceId: e.instanceId });
    expect(Object.keys(queried).sort()).toEqual(['RequestId', 'TokenStatus']);
    expect(queried.TokenStatus).toBe(true);
    expect(await query(e, applied.Token, 'GET')).toBe(true);

    const other = await apply(e, { Actions: 'W', Resources: 'TopicC/#' });
    expect(other.Token).not.toBe(applied.Token);

    const revoked = await callApi(e, 'RevokeToken', { Token: applied.Token, InstanceId: e.instanceId });
    expect(Object.keys(revoked)).toEqual(['RequestId']);
    expect(await query(e, applied.Token)).toBe(false);
    expect(await query(e, other.Token)).toBe(true);
    await callApi(e, 'RevokeToken', { Token: applied.Token, InstanceId: e.instanceId });
    expect(e.stats().actions['RevokeToken']).toEqual({ ok: 2, errors: {} });
  });

  it('tokens expire on the emulator clock; an ExpireTime past 30 days is cut to 30 days', async () => {
    const e = emu();
    const short = await apply(e, { ExpireTime: String(emuNow() + 120_000) });
    const long = await apply(e, { ExpireTime: String(emuNow() + 40 * DAY) });
    expect(await query(e, short.Token)).toBe(true);
    offset = 119_000 - 5_000; // with five seconds for the calls above
    expect(await query(e, short.Token)).toBe(true);
    offset = 120_000;
    expect(await query(e, short.Token)).toBe(false);
    offset = 30 * DAY - 10_000;
    expect(await query(e, long.Token)).toBe(true);
    offset = 30 * DAY + 1_000;
    expect(await query(e, long.Token)).toBe(false);
    // An expired token is still known: revoking it succeeds and changes nothing.
    await callApi(e, 'RevokeToken', { Token: short.Token, InstanceId: e.instanceId });
  });

  it('ApplyToken refuses each bad parameter with InvalidParameter.<Name> (presence first, then form, then instance)', async () => {
    const e = emu();
    const good = { Resources: 'TopicA/+', InstanceId: e.instanceId, ExpireTime: String(emuNow() + 3_600_000), Actions: 'R' };
    const failure = async (params: Record<string, string>): Promise<{ code: string; message: string; status: number }> => {
      const error = await apiFailure(callApi(e, 'ApplyToken', params));
      return { code: error.code, message: String(error.data['Message']), status: error.entry.response.statusCode };
    };
    const without = (name: keyof typeof good): Record<string, string> => Object.fromEntries(Object.entries(good).filter(([key]) => key !== name));

    for (const name of ['Resources', 'InstanceId', 'ExpireTime', 'Actions'] as const) {
      expect((await failure(without(name))).code, name).toBe(`InvalidParameter.${name}`);
      expect((await failure({ ...good, [name]: '' })).code, name).toBe(`InvalidParameter.${name}`);
    }
    expect((await failure({})).code).toBe('InvalidParameter.Resources');
    expect((await failure({ ...without('InstanceId'), Resources: 'b,a' })).code).toBe('InvalidParameter.InstanceId');

    const generic = 'An error occurred while validating the parameter. The parameter may be missing or invalid.';
    expect(await failure({ ...good, Resources: 'TopicB,TopicA' })).toEqual({
      code: 'InvalidParameter.Resources',
      status: 400,
      message: `${generic} Resources: resources must be in dictionary order without duplicates: "TopicB" comes before "TopicA".`,
    });
    expect((await failure({ ...good, Resources: '+/x' })).message).toBe(`${generic} Resources: resource 1 ("+/x") must start with a parent topic of letters, digits, - and _ (no wildcard).`);
    const hundredAndOne = Array.from({ length: 101 }, (_, i) => `T${String(i).padStart(3, '0')}`).join(',');
    expect((await failure({ ...good, Resources: hundredAndOne })).message).toBe(`${generic} Resources: at most 100 resources, not 101.`);
    expect((await failure({ ...good, Resources: 'a/#/b' })).code).toBe('InvalidParameter.Resources');
    expect((await failure({ ...good, Resources: 'TopicA,TopicA' })).code).toBe('InvalidParameter.Resources');

    expect(await failure({ ...good, ExpireTime: String(emuNow() + 30_000) })).toEqual({
      code: 'InvalidParameter.ExpireTime',
      status: 400,
      message: `${generic} ExpireTime: must be at least 60 s in the future.`,
    });
    expect((await failure({ ...good, ExpireTime: String(emuNow() - 1_000) })).code).toBe('InvalidParameter.ExpireTime');
    expect((await failure({ ...good, ExpireTime: '1.7e12' })).message).toBe(`${generic} ExpireTime: must be ms since the epoch, in decimal digits.`);

    for (const actions of ['W,R', 'RW', 'r', 'R, W']) {
      expect(await failure({ ...good, Actions: actions }), actions).toEqual({ code: 'InvalidParameter.Actions', status: 400, message: `${generic} Actions: must be R, W or R,W.` });
    }
    const other = await failure({ ...good, InstanceId: 'mqtt-someone-else' });
    expect(other).toMatchObject({ code: 'InstancePermissionCheckFailed', status: 400 });

    // 100 resources in order, each of up to 64 characters, are fine.
    const hundred = Array.from({ length: 100 }, (_, i) => `T${String(i).padStart(3, '0')}/${'x'.repeat(59)}`).join(',');
    expect((await apply(e, { Resources: hundred })).Token).toMatch(TOKEN);
  });

  it('QueryToken and RevokeToken check Token and InstanceId; only RevokeToken refuses what is not a token of the instance', async () => {
    const e = emu();
    const { Token: token } = await apply(e);
    for (const action of ['QueryToken', 'RevokeToken']) {
      rate += 1_000; // RevokeToken allows 5 a second: each round gets a fresh budget
      expect((await apiFailure(callApi(e, action, { InstanceId: e.instanceId }))).code, action).toBe('InvalidParameter.Token');
      expect((await apiFailure(callApi(e, action, { Token: '', InstanceId: e.instanceId }))).code, action).toBe('InvalidParameter.Token');
      expect((await apiFailure(callApi(e, action, { Token: token }))).code, action).toBe('InvalidParameter.InstanceId');
      expect((await apiFailure(callApi(e, action, { Token: token, InstanceId: 'mqtt-someone-else' }))).code, action).toBe('InstancePermissionCheckFailed');
    }
    // A token altered in its secret part, or anything else: "not valid" to QueryToken, refused by RevokeToken.
    const altered = `${token.slice(0, 40)}${token[40] === 'A' ? 'B' : 'A'}${token.slice(41)}`;
    rate += 1_000;
    for (const bad of [altered, 'LzMT+XLFl5s/YWJ/MlDz4t==', 'x']) {
      expect(await query(e, bad), bad).toBe(false);
      const refused = await apiFailure(callApi(e, 'RevokeToken', { Token: bad, InstanceId: e.instanceId }));
      expect(refused.code, bad).toBe('InvalidParameter.Token');
      expect(refused.data['Message']).toBe('An error occurred while validating the parameter. The parameter may be missing or invalid. It is not a token of this instance.');
    }
    expect(await query(e, token)).toBe(true); // none of that touched the real one
  });

  it('ApplyToken and RevokeToken are POST only: a GET is 404 InvalidAction.NotFound and changes nothing; the queries take GET', async () => {
    const e = emu();
    const { Token: token } = await apply(e);
    const params = { Resources: 'TopicA', InstanceId: e.instanceId, ExpireTime: String(emuNow() + 3_600_000), Actions: 'W' };
    const getApply = await apiFailure(callApi(e, 'ApplyToken', params, 'GET'));
    expect(getApply.code).toBe('InvalidAction.NotFound');
    expect(getApply.entry.response.statusCode).toBe(404);
    expect(getApply.data['Message']).toBe('Specified api is not found, please check your url and method.');
    const getRevoke = await apiFailure(callApi(e, 'RevokeToken', { Token: token, InstanceId: e.instanceId }, 'GET'));
    expect(getRevoke.code).toBe('InvalidAction.NotFound');
    expect(await query(e, token, 'GET')).toBe(true);
    // The method is checked after the signature: a GET signed badly is still a signature error.
    const forged = await rawCall(e, signed(commonParams(e, 'ApplyToken', params), 'GET', 'not-the-secret'), { method: 'GET' });
    expect(forged.body['Code']).toBe('SignatureDoesNotMatch');
    expect(e.stats().actions['ApplyToken']?.errors).toMatchObject({ 'InvalidAction.NotFound': 1, SignatureDoesNotMatch: 1 });
  });

  it('with getOnPostOnly: accept, GET serves ApplyToken and RevokeToken too', async () => {
    const e = await emulatorForTest({ getOnPostOnly: 'accept' });
    const { Token: token } = await callApi<ApplyBody>(e, 'ApplyToken', { Resources: 'TopicA', InstanceId: e.instanceId, ExpireTime: String(Date.now() + 3_600_000), Actions: 'W' }, 'GET');
    expect(token).toMatch(TOKEN);
    await callApi(e, 'RevokeToken', { Token: token, InstanceId: e.instanceId }, 'GET');
    expect((await callApi<QueryBody>(e, 'QueryToken', { Token: token, InstanceId: e.instanceId }, 'GET')).TokenStatus).toBe(false);
  });

  it('answers XML with the metadata shape, and failNext takes the token actions', async () => {
    const e = emu();
    const xml = await fetch(new URL('/', e.apiEndpoint), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(signed(commonParams(e, 'QueryToken', { Token: 'x', InstanceId: e.instanceId, Format: 'XML' }), 'POST', e.accessKeySecret)),
    });
    expect(xml.status).toBe(200);
    expect(await xml.text()).toMatch(/^<\?xml version='1\.0' encoding='UTF-8'\?><QueryTokenResponse><RequestId>[0-9A-F-]{36}<\/RequestId><TokenStatus>false<\/TokenStatus><\/QueryTokenResponse>$/);

    e.failNext('ApplyToken', 'ApplyTokenOverFlow');
    const faulted = await apiFailure(apply(e));
    expect(faulted.code).toBe('ApplyTokenOverFlow');
    expect(faulted.data['Message']).toBe('You have applied for tokens too many times. Please try again later.');
    expect((await apply(e)).Token).toMatch(TOKEN);
  });

  it('is signed like every other action: V3 through @alicloud/openapi-client, V2 with the token in a form body', async () => {
    const e = emu();
    const client = officialClient(e);
    const applied = await officialCall<ApplyBody>(client, 'ApplyToken', { Resources: 'TopicA/#', InstanceId: e.instanceId, ExpireTime: String(emuNow() + 3_600_000), Actions: 'R' });
    expect(applied.statusCode).toBe(200);
    expect(applied.body.Token).toMatch(TOKEN);
    const queried = await officialCall<QueryBody>(client, 'QueryToken', { Token: applied.body.Token, InstanceId: e.instanceId }, { where: 'body' });
    expect(queried.body.TokenStatus).toBe(true);
    // A token's +, / and = survive form encoding (pop-core percent-encodes them; this sends them through fetch).
    const reply = await signedCall(e, commonParams(e, 'RevokeToken', { Token: applied.body.Token, InstanceId: e.instanceId }));
    expect(reply.status).toBe(200);
    expect((await callApi<QueryBody>(e, 'QueryToken', { Token: applied.body.Token, InstanceId: e.instanceId })).TokenStatus).toBe(false);
  });
});

describe('per-action QPS limits, on a frozen rate clock', () => {
  let rate = 0;
  const start = (options: EmulatorOptions = {}): Promise<Emulator> => emulatorForTest({ rateClock: () => rate, ...options });
  const applyParams = (e: Emulator): Record<string, string> => ({ Resources: 'TopicA', InstanceId: e.instanceId, ExpireTime: String(Date.now() + 3_600_000), Actions: 'W' });

  /** Send `count` calls at once; the codes of those that failed, '' for each success, in order. */
  async function burst(e: Emulator, count: number, action: string, params: Record<string, string>): Promise<string[]> {
    const client = apiClient(e);
    return Promise.all(Array.from({ length: count }, () => client.request(action, params, { method: 'POST' }).then(() => '', (error: { code: string }) => error.code)));
  }

  it('ApplyToken: 100 in any one second, then 400 ApplyTokenOverFlow; the next once the first are a second old', async () => {
    rate = 0;
    const e = await start();
    expect(await burst(e, 100, 'ApplyToken', applyParams(e))).toEqual(Array.from({ length: 100 }, () => ''));
    const over = await apiFailure(callApi(e, 'ApplyToken', applyParams(e)));
    expect(over.code).toBe('ApplyTokenOverFlow');
    expect(over.entry.response.statusCode).toBe(400);
    rate += 999; // still within the second of the first hundred
    expect(await burst(e, 1, 'ApplyToken', applyParams(e))).toEqual(['ApplyTokenOverFlow']);
    rate += 1;
    expect((await burst(e, 101, 'ApplyToken', applyParams(e))).sort()).toEqual([...Array.from({ length: 100 }, () => ''), 'ApplyTokenOverFlow']);
    expect(e.stats().actions['ApplyToken']).toEqual({ ok: 200, errors: { ApplyTokenOverFlow: 3 } });
  });

  it('QueryToken: 100 a second, then 400 QueryTokenOverFlow', async () => {
    rate = 0;
    const e = await start();
    const params = { Token: 'x', InstanceId: e.instanceId };
    expect(await burst(e, 100, 'QueryToken', params)).toEqual(Array.from({ length: 100 }, () => ''));
    const over = await apiFailure(callApi(e, 'QueryToken', params));
    expect(over.code).toBe('QueryTokenOverFlow');
    expect(over.data['Message']).toBe('You have queried tokens too many times. Please try again later.');
  });

  it('RevokeToken: 5 a second, then 400 RevokeTokenOverFlow, counted before the token is looked at', async () => {
    rate = 0;
    const e = await start();
    const tokens = await Promise.all(Array.from({ length: 6 }, () => callApi<ApplyBody>(e, 'ApplyToken', applyParams(e)).then((b) => b.Token)));
    const codes = await Promise.all(tokens.map((token) => callApi(e, 'RevokeToken', { Token: token, InstanceId: e.instanceId }).then(() => '', (error: { code: string }) => error.code)));
    expect([...codes].sort()).toEqual(['', '', '', '', '', 'RevokeTokenOverFlow']);
    const over = await apiFailure(callApi(e, 'RevokeToken', { Token: 'not even a token', InstanceId: e.instanceId }));
    expect(over.code).toBe('RevokeTokenOverFlow');
    expect(over.data['Message']).toBe('You have revoked tokens too many times. Please try again later.');
    rate += 1_000; // 5 in any one second: a second later the first five have left the window
    const left = tokens[codes.indexOf('RevokeTokenOverFlow')] ?? '';
    await callApi(e, 'RevokeToken', { Token: left, InstanceId: e.instanceId });
    expect((await callApi<QueryBody>(e, 'QueryToken', { Token: left, InstanceId: e.instanceId })).TokenStatus).toBe(false);
  });

  it('actionQpsLimits changes one limit and keeps the others; the account limit answers first', async () => {
    rate = 0;
    const e = await start({ actionQpsLimits: { RevokeToken: 1 }, qpsLimit: 4 });
    const params = { Token: 'x', InstanceId: e.instanceId };
    expect((await apiFailure(callApi(e, 'RevokeToken', params))).code).toBe('InvalidParameter.Token');
    expect((await apiFailure(callApi(e, 'RevokeToken', params))).code).toBe('RevokeTokenOverFlow');
    await callApi(e, 'QueryToken', params);
    await callApi(e, 'QueryToken', params);
    expect((await apiFailure(callApi(e, 'QueryToken', params))).code).toBe('Throttling.User');
    // The account limit comes before the action's: an exhausted account gets Throttling.User on every action.
    expect((await apiFailure(callApi(e, 'RevokeToken', params))).code).toBe('Throttling.User');
    expect(e.stats().actions['QueryToken']).toEqual({ ok: 2, errors: { 'Throttling.User': 1 } });
  });
});

describe('tokens in the data directory', () => {
  it('survive a restart of the emulator as revoked, valid or expired; the file holds no usable token', async () => {
    const dir = join(await tempDir(), 'state');
    let offset = 0;
    const now = (): number => Date.now() + offset;
    const options = { dataDir: dir, now, timestampWindowMs: 100 * DAY };
    const first = await emulatorForTest(options);
    const apply = async (e: Emulator, expireIn: number): Promise<string> =>
      (await callApi<ApplyBody>(e, 'ApplyToken', { Resources: 'TopicA/+', InstanceId: e.instanceId, ExpireTime: String(now() + expireIn), Actions: 'R,W' })).Token;
    const kept = await apply(first, 3_600_000);
    const revoked = await apply(first, 3_600_000);
    const expiring = await apply(first, 120_000);
    await callApi(first, 'RevokeToken', { Token: revoked, InstanceId: first.instanceId });

    // Answered means written: the directory already has three token records, and none of the tokens.
    const text = (await Promise.all([STATE_FILE, JOURNAL_FILE].map((name) => readFile(join(dir, name), 'utf8')))).join('\n');
    const tokens = (await readDataDirState(dir))?.tokens ?? [];
    expect(tokens).toHaveLength(3);
    expect(Object.keys(tokens[0] ?? {}).sort()).toEqual(['createTime', 'expireTime', 'id', 'instanceId', 'resources', 'secretSha256', 'type']);
    expect(tokens[0]).toMatchObject({ instanceId: first.instanceId, type: 'RW', resources: ['TopicA/+'] });
    expect(tokens[1]?.revokeTime).toEqual(expect.any(Number));
    for (const token of [kept, revoked, expiring]) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(token.slice(22, 60));
    }
    await first.close();

    offset = 180_000;
    const second = await emulatorForTest(options);
    const status = async (token: string): Promise<boolean> =>
      (await callApi<QueryBody>(second, 'QueryToken', { Token: token, InstanceId: second.instanceId })).TokenStatus;
    expect(await status(kept)).toBe(true);
    expect(await status(revoked)).toBe(false);
    expect(await status(expiring)).toBe(false);
    // Still known after the restart: revoking the revoked one again is a success, and the kept one can be revoked.
    await callApi(second, 'RevokeToken', { Token: revoked, InstanceId: second.instanceId });
    await callApi(second, 'RevokeToken', { Token: kept, InstanceId: second.instanceId });
    expect(await status(kept)).toBe(false);
  });

  it('restart() of the MQTT side keeps tokens without a data directory (the OpenAPI keeps running)', async () => {
    const e = await emulatorForTest({});
    const { Token: token } = await callApi<ApplyBody>(e, 'ApplyToken', { Resources: 'TopicA', InstanceId: e.instanceId, ExpireTime: String(Date.now() + 3_600_000), Actions: 'R' });
    await e.restart();
    expect((await callApi<QueryBody>(e, 'QueryToken', { Token: token, InstanceId: e.instanceId })).TokenStatus).toBe(true);
  });
});
