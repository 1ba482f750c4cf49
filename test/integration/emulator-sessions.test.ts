import type { MqttClient } from 'mqtt';
import { beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import type { DeviceCredential } from '../../src/credential.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { signRpc } from '../../src/signer/openapi.js';
import { ANY_GROUP, apiClient, apiFailure, callApi, commonParams, connectMqtt, registerDevice, signedCall, useEmulator } from '../helpers/emulator.js';
import { officialCall, officialClient } from '../helpers/openapi-client.js';

interface SessionBody {
  RequestId: string;
  OnlineStatus: boolean;
}
interface BatchBody {
  RequestId: string;
  OnlineStatusList: Array<{ ClientId: string; OnlineStatus: boolean }>;
}

/** Resolves when the emulator reports this event for this ClientId (listen before causing it). */
function eventFor(e: Emulator, name: 'clientConnected' | 'clientDisconnected', clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const listener = (id: string): void => {
      if (id !== clientId) return;
      e.events.off(name, listener);
      resolve();
    };
    e.events.on(name, listener);
  });
}

/** Connect a registered device with its DeviceCredential; ended when the test ends. */
async function connectDevice(e: Emulator, credential: DeviceCredential): Promise<MqttClient> {
  const client = await connectMqtt(e.mqttUrl, signDeviceCredential(credential));
  onTestFinished(() => client.endAsync(true));
  return client;
}

/** End a client cleanly and wait until the broker has seen it go. */
async function disconnectDevice(e: Emulator, client: MqttClient, clientId: string): Promise<void> {
  const gone = eventFor(e, 'clientDisconnected', clientId);
  await client.endAsync();
  await gone;
}

async function emulatorForTest(options: EmulatorOptions): Promise<Emulator> {
  const emulator = await startEmulator({ env: {}, ...ANY_GROUP, wsPort: false, ...options });
  onTestFinished(() => emulator.close());
  return emulator;
}

describe('session queries answer from the broker', () => {
  let rate = 0;
  const emu = useEmulator({ rateClock: () => rate, wsPort: false });
  beforeEach(() => {
    rate += 1_000;
  });

  const online = (e: Emulator, clientId: string, method: 'POST' | 'GET' = 'POST'): Promise<boolean> =>
    callApi<SessionBody>(e, 'QuerySessionByClientId', { ClientId: clientId, InstanceId: e.instanceId }, method).then((b) => b.OnlineStatus);
  const batch = (e: Emulator, clientIds: string[], method: 'POST' | 'GET' = 'POST'): Promise<BatchBody> =>
    apiClient(e).request<BatchBody>('BatchQuerySessionByClientIds', { InstanceId: e.instanceId, ClientIdList: clientIds }, { method });

  it('QuerySessionByClientId: online once connected, offline once gone; never connected is offline', async () => {
    const e = emu();
    const credential = await registerDevice(e, 'GID_sess@@@dev-1');
    const body = await callApi<SessionBody>(e, 'QuerySessionByClientId', { ClientId: credential.clientId, InstanceId: e.instanceId });
    expect(Object.keys(body).sort()).toEqual(['OnlineStatus', 'RequestId']);
    expect(body.OnlineStatus).toBe(false);

    const client = await connectDevice(e, credential);
    expect(await online(e, credential.clientId)).toBe(true);
    expect(await online(e, credential.clientId, 'GET')).toBe(true);
    expect(await online(e, 'GID_sess@@@dev-never')).toBe(false);

    await disconnectDevice(e, client, credential.clientId);
    expect(await online(e, credential.clientId)).toBe(false);
  });

  it('follows a network cut, a takeover by the same ClientId, and an MQTT restart', async () => {
    const e = emu();
    const credential = await registerDevice(e, 'GID_sess@@@dev-2');
    await connectDevice(e, credential);
    const cut = eventFor(e, 'clientDisconnected', credential.clientId);
    expect(e.disconnect(credential.clientId)).toBe(true);
    await cut;
    expect(await online(e, credential.clientId)).toBe(false);

    // Takeover: a second connection with the same ClientId ends the first; the ClientId stays online throughout.
    const first = await connectDevice(e, credential);
    const firstClosed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await connectDevice(e, credential);
    await firstClosed;
    expect(await online(e, credential.clientId)).toBe(true);
    await disconnectDevice(e, second, credential.clientId);
    expect(await online(e, credential.clientId)).toBe(false);

    await connectDevice(e, credential);
    expect(await online(e, credential.clientId)).toBe(true);
    await e.restart(); // drops every client; the events still arrive on the same emitter
    expect(await online(e, credential.clientId)).toBe(false);
    await connectDevice(e, credential);
    expect(await online(e, credential.clientId)).toBe(true);
  });

  it('BatchQuerySessionByClientIds: 1 to 10 ClientIds (pop-core sends ClientIdList.n), answered in order', async () => {
    const e = emu();
    const ids = Array.from({ length: 10 }, (_, i) => `GID_batch@@@dev-${i}`);
    const credentials = await Promise.all(ids.slice(0, 3).map((id) => registerDevice(e, id)));
    for (const credential of credentials) await connectDevice(e, credential);
    const expected = ids.map((id, i) => ({ ClientId: id, OnlineStatus: i < 3 }));

    for (let n = 1; n <= 10; n++) {
      const body = await batch(e, ids.slice(0, n));
      expect(Object.keys(body).sort()).toEqual(['OnlineStatusList', 'RequestId']);
      expect(body.OnlineStatusList).toEqual(expected.slice(0, n));
    }
    const reversed = await batch(e, [...ids].reverse(), 'GET');
    expect(reversed.OnlineStatusList).toEqual([...expected].reverse());
    const twice = await batch(e, [ids[0] ?? '', ids[9] ?? '', ids[0] ?? '']);
    expect(twice.OnlineStatusList).toEqual([expected[0], expected[9], expected[0]]);
  });

  it('refuses a bad ClientIdList with InvalidParameter.ClientIdList', async () => {
    const e = emu();
    const failure = async (params: Record<string, string>): Promise<{ code: string; message: string }> => {
      const reply = await signedCall(e, commonParams(e, 'BatchQuerySessionByClientIds', params));
      expect(reply.status, JSON.stringify(params)).toBe(400);
      return { code: String(reply.body['Code']), message: String(reply.body['Message']) };
    };
    const generic = 'An error occurred while validating the parameter. The parameter may be missing or invalid.';
    const list = (ids: string[]): Record<string, string> => Object.fromEntries(ids.map((id, i) => [`ClientIdList.${i + 1}`, id]));
    const eleven = Array.from({ length: 11 }, (_, i) => `GID_b@@@d${i}`);

    expect(await failure({ InstanceId: e.instanceId })).toEqual({ code: 'InvalidParameter.ClientIdList', message: generic });
    expect(await failure({ InstanceId: e.instanceId, ...list(eleven) })).toEqual({ code: 'InvalidParameter.ClientIdList', message: `${generic} ClientIdList: at most 10 ClientIds.` });
    expect(await failure({ InstanceId: e.instanceId, 'ClientIdList.11': 'GID_b@@@d' })).toEqual({ code: 'InvalidParameter.ClientIdList', message: `${generic} ClientIdList: at most 10 ClientIds.` });
    expect(await failure({ InstanceId: e.instanceId, 'ClientIdList.1': 'GID_b@@@d1', 'ClientIdList.3': 'GID_b@@@d3' })).toEqual({
      code: 'InvalidParameter.ClientIdList',
      message: `${generic} ClientIdList: ClientIdList.2 is missing.`,
    });
    expect(await failure({ InstanceId: e.instanceId, 'ClientIdList.2': 'GID_b@@@d2' })).toEqual({ code: 'InvalidParameter.ClientIdList', message: `${generic} ClientIdList: ClientIdList.1 is missing.` });
    expect(await failure({ InstanceId: e.instanceId, ...list(['GID_b@@@d1', 'not-a-client-id']) })).toEqual({
      code: 'InvalidParameter.ClientIdList',
      message: `${generic} ClientIdList: ClientIdList.2 is not a ClientId of the form <GroupId>@@@<DeviceId>.`,
    });
    expect(await failure({ InstanceId: e.instanceId, ...list(['']) })).toMatchObject({ code: 'InvalidParameter.ClientIdList' });
    expect(await failure({ InstanceId: e.instanceId, ClientIdList: '["GID_b@@@d1"]' })).toEqual({
      code: 'InvalidParameter.ClientIdList',
      message: `${generic} ClientIdList: send the list as ClientIdList.1, ClientIdList.2, ….`,
    });
    for (const name of ['ClientIdList.0', 'ClientIdList.01', 'ClientIdList.x', 'ClientIdList.1.Id']) {
      expect(await failure({ InstanceId: e.instanceId, [name]: 'GID_b@@@d1' }), name).toEqual({
        code: 'InvalidParameter.ClientIdList',
        message: `${generic} ClientIdList: entries are named ClientIdList.1 to ClientIdList.10.`,
      });
    }
    expect(await failure(list(['GID_b@@@d1']))).toMatchObject({ code: 'InvalidParameter.InstanceId' });
    expect(await failure({ InstanceId: 'mqtt-someone-else', ...list(['GID_b@@@d1']) })).toMatchObject({ code: 'InstancePermissionCheckFailed' });
    // Through pop-core: an empty array sends no ClientIdList at all.
    expect((await apiFailure(batch(e, []))).code).toBe('InvalidParameter.ClientIdList');
  });

  it('QuerySessionByClientId checks ClientId and InstanceId like the credential operations', async () => {
    const e = emu();
    const code = async (params: Record<string, string>): Promise<string> => (await apiFailure(callApi(e, 'QuerySessionByClientId', params))).code;
    expect(await code({ InstanceId: e.instanceId })).toBe('InvalidParameter.ClientId');
    expect(await code({ ClientId: 'GID_a@@@b' })).toBe('InvalidParameter.InstanceId');
    expect(await code({ ClientId: 'no-group', InstanceId: e.instanceId })).toBe('InvalidParameter.ClientId');
    expect(await code({ ClientId: `GID_a@@@${'x'.repeat(60)}`, InstanceId: e.instanceId })).toBe('InvalidParameter.ClientId');
    expect(await code({ ClientId: 'GID_a@@@b', InstanceId: 'mqtt-someone-else' })).toBe('InstancePermissionCheckFailed');
  });

  it('answers V3 through @alicloud/openapi-client, and XML in the metadata shape', async () => {
    const e = emu();
    const credential = await registerDevice(e, 'GID_v3@@@dev');
    await connectDevice(e, credential);
    const client = officialClient(e);
    const one = await officialCall<SessionBody>(client, 'QuerySessionByClientId', { ClientId: credential.clientId, InstanceId: e.instanceId });
    expect(one.body.OnlineStatus).toBe(true);
    const many = await officialCall<BatchBody>(client, 'BatchQuerySessionByClientIds', { InstanceId: e.instanceId, 'ClientIdList.1': credential.clientId, 'ClientIdList.2': 'GID_v3@@@other' });
    expect(many.body.OnlineStatusList).toEqual([{ ClientId: credential.clientId, OnlineStatus: true }, { ClientId: 'GID_v3@@@other', OnlineStatus: false }]);

    const params = commonParams(e, 'BatchQuerySessionByClientIds', { InstanceId: e.instanceId, 'ClientIdList.1': credential.clientId, 'ClientIdList.2': 'GID_v3@@@other', Format: 'XML' });
    const url = new URL('/', e.apiEndpoint);
    url.search = new URLSearchParams({ ...params, Signature: signRpc('GET', params, e.accessKeySecret) }).toString();
    const xml = await (await fetch(url)).text();
    expect(xml).toMatch(
      new RegExp(
        `^<\\?xml version='1\\.0' encoding='UTF-8'\\?><BatchQuerySessionByClientIdsResponse><RequestId>[0-9A-F-]{36}</RequestId>` +
          `<OnlineStatusList><ClientId>GID_v3@@@dev</ClientId><OnlineStatus>true</OnlineStatus></OnlineStatusList>` +
          `<OnlineStatusList><ClientId>GID_v3@@@other</ClientId><OnlineStatus>false</OnlineStatus></OnlineStatusList>` +
          `</BatchQuerySessionByClientIdsResponse>$`,
      ),
    );
  });
});

describe('session query QPS limits, on a frozen rate clock', () => {
  let rate = 0;

  /** Send `count` calls at once; each failure's code, '' for each success, sorted. */
  async function burst(e: Emulator, count: number, action: string, params: Record<string, unknown>): Promise<string[]> {
    const client = apiClient(e);
    const codes = await Promise.all(Array.from({ length: count }, () => client.request(action, params, { method: 'POST' }).then(() => '', (error: { code: string }) => error.code)));
    return codes.sort();
  }
  const successes = (n: number): string[] => Array.from({ length: n }, () => '');

  it('QuerySessionByClientId: 500 a second, then 403 SystemOverFlow (the account limit lifted to see it)', async () => {
    const e = await emulatorForTest({ rateClock: () => rate, qpsLimit: Number.POSITIVE_INFINITY });
    const params = { ClientId: 'GID_q@@@d', InstanceId: e.instanceId };
    expect(await burst(e, 250, 'QuerySessionByClientId', params)).toEqual(successes(250));
    expect(await burst(e, 250, 'QuerySessionByClientId', params)).toEqual(successes(250));
    const over = await apiFailure(callApi(e, 'QuerySessionByClientId', params));
    expect(over.code).toBe('SystemOverFlow');
    expect(over.entry.response.statusCode).toBe(403);
    rate += 999; // 500 in any one second: none comes back within the second
    expect((await apiFailure(callApi(e, 'QuerySessionByClientId', params))).code).toBe('SystemOverFlow');
    rate += 1; // a second after the first ones, they leave the window
    expect((await callApi<SessionBody>(e, 'QuerySessionByClientId', params)).OnlineStatus).toBe(false);
  });

  it('BatchQuerySessionByClientIds: 100 a second, then SystemOverFlow; 500 with legacy statuses', async () => {
    const e = await emulatorForTest({ rateClock: () => rate, errorStatuses: 'legacy' });
    const params = { InstanceId: e.instanceId, ClientIdList: ['GID_q@@@d'] };
    expect(await burst(e, 100, 'BatchQuerySessionByClientIds', params)).toEqual(successes(100));
    const over = await apiFailure(apiClient(e).request('BatchQuerySessionByClientIds', params, { method: 'POST' }));
    expect(over.code).toBe('SystemOverFlow');
    expect(over.entry.response.statusCode).toBe(500);
    expect(e.stats().actions['BatchQuerySessionByClientIds']).toEqual({ ok: 100, errors: { SystemOverFlow: 1 } });
  });

  it('actionThrottleCode: Throttling.Api answers 400 instead', async () => {
    const e = await emulatorForTest({ rateClock: () => rate, actionThrottleCode: 'Throttling.Api', actionQpsLimits: { QuerySessionByClientId: 2 } });
    const params = { ClientId: 'GID_q@@@d', InstanceId: e.instanceId };
    expect(await burst(e, 3, 'QuerySessionByClientId', params)).toEqual(['', '', 'Throttling.Api']);
    const over = await apiFailure(callApi(e, 'QuerySessionByClientId', params));
    expect(over.entry.response.statusCode).toBe(400);
    expect(over.data['Message']).toBe('Request was denied due to api flow control.');
  });
});
