import { describe, expect, it } from 'vitest';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { callApi, apiFailure, commonParams, rawCall, signed, useEmulator } from '../helpers/emulator.js';

const CLIENT = 'GID_fault@@@dev';

describe('OpenAPI fault injection: failNext', () => {
  const emu = useEmulator({}, 'test');

  it('answers the queued code with its catalog status, changes nothing, then serves normally', async () => {
    const e = emu();
    const params = { ClientId: CLIENT, InstanceId: e.instanceId };
    e.failNext('RegisterDeviceCredential', 'SystemOverFlow', 2);
    e.failNext('RegisterDeviceCredential', 'Throttling.User');
    const first = await apiFailure(callApi(e, 'RegisterDeviceCredential', params));
    expect(first.code).toBe('SystemOverFlow');
    expect(first.entry.response.statusCode).toBe(403);
    expect(first.data['Message']).toBe('An error occurred while processing your request. Please try again.');
    expect((await apiFailure(callApi(e, 'RegisterDeviceCredential', params))).code).toBe('SystemOverFlow');
    const throttled = await apiFailure(callApi(e, 'RegisterDeviceCredential', params));
    expect(throttled.code).toBe('Throttling.User');
    expect(throttled.entry.response.statusCode).toBe(400);
    // Nothing was registered by the failed calls.
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).code).toBe('DeviceCredentialNotFound');
    await callApi(e, 'RegisterDeviceCredential', params);
    expect(e.stats().actions).toEqual({
      RegisterDeviceCredential: { ok: 1, errors: { SystemOverFlow: 2, 'Throttling.User': 1 } },
      GetDeviceCredential: { ok: 0, errors: { DeviceCredentialNotFound: 1 } },
    });
  });

  it('does not fault calls of other actions, and a refused signature does not consume the queue', async () => {
    const e = emu();
    const params = { ClientId: CLIENT, InstanceId: e.instanceId };
    e.failNext('UnRegisterDeviceCredential', 'InternalError');
    await callApi(e, 'RegisterDeviceCredential', params);
    const forged = await rawCall(e, signed(commonParams(e, 'UnRegisterDeviceCredential', params), 'POST', 'not-the-secret'));
    expect(forged.body['Code']).toBe('SignatureDoesNotMatch');
    const faulted = await apiFailure(callApi(e, 'UnRegisterDeviceCredential', params));
    expect(faulted.code).toBe('InternalError');
    expect(faulted.entry.response.statusCode).toBe(417);
    await callApi(e, 'GetDeviceCredential', params); // still registered
    await callApi(e, 'UnRegisterDeviceCredential', params);
  });

  it('over HTTP: POST /_emulator/fail-next {"action", "code", "count"} queues like failNext', async () => {
    const e = emu();
    const post = async (body: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
      const response = await fetch(new URL('/_emulator/fail-next', e.apiEndpoint), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    expect(await post({ action: 'GetDeviceCredential', code: 'Throttling.User', count: 2 })).toEqual({ status: 200, body: { queued: 2 } });
    const params = { ClientId: CLIENT, InstanceId: e.instanceId };
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).code).toBe('Throttling.User');
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).code).toBe('Throttling.User');
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).code).toBe('DeviceCredentialNotFound');
    for (const bad of [{ action: 'GetDeviceCredential', code: 'Bogus' }, { action: 'GetDeviceCredential', code: 'InternalError', count: 0 }, { code: 'InternalError' }]) {
      const reply = await post(bad);
      expect(reply.status).toBe(400);
      expect(reply.body['Code']).toBe('ParameterCheckFailed');
    }
  });

  it('refuses a code outside the catalog', () => {
    const e = emu();
    let thrown: unknown;
    try {
      // @ts-expect-error -- not an API error code: refused by the types, and at run time for JavaScript callers
      e.failNext('RegisterDeviceCredential', 'Bogus');
    } catch (error) {
      thrown = error;
    }
    expect(isApsaraMqDeviceError(thrown, 'InvalidOption')).toBe(true);
  });
});

describe('OpenAPI fault injection: legacy statuses', () => {
  const emu = useEmulator({ errorStatuses: 'legacy' });

  it('uses the errorStatuses switch for injected InternalError / SystemOverFlow', async () => {
    const e = emu();
    e.failNext('GetDeviceCredential', 'InternalError');
    e.failNext('GetDeviceCredential', 'SystemOverFlow');
    const params = { ClientId: CLIENT, InstanceId: e.instanceId };
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).entry.response.statusCode).toBe(500);
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).entry.response.statusCode).toBe(500);
  });
});

describe('OpenAPI fault injection: faultRate', () => {
  // Per call: one draw decides (< 0.5 faults), a second picks the code. Calls run one after another.
  const draws = [0.1, 0.9, 0.7, 0.4, 0.0, 0.6];
  const emu = useEmulator({ faultRate: 0.5, faultCodes: ['SystemOverFlow', 'Throttling.User'], random: () => draws.shift() ?? 0.99 });

  it('faults calls by the scripted draws, with the configured codes, counted in stats', async () => {
    const e = emu();
    const params = { ClientId: CLIENT, InstanceId: e.instanceId };
    expect((await apiFailure(callApi(e, 'RegisterDeviceCredential', params))).code).toBe('Throttling.User'); // 0.1, 0.9
    await callApi(e, 'RegisterDeviceCredential', params); // 0.7
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).code).toBe('SystemOverFlow'); // 0.4, 0.0
    await callApi(e, 'GetDeviceCredential', params); // 0.6
    await callApi(e, 'GetDeviceCredential', params); // 0.99 from here on
    expect(draws).toEqual([]);
    expect(e.stats().actions).toEqual({
      RegisterDeviceCredential: { ok: 1, errors: { 'Throttling.User': 1 } },
      GetDeviceCredential: { ok: 2, errors: { SystemOverFlow: 1 } },
    });
  });
});

describe('OpenAPI fault injection: latency', () => {
  // The first request draws the longest delay, every later one none.
  let drawn: () => void = () => undefined;
  const firstDraw = new Promise<void>((resolve) => {
    drawn = resolve;
  });
  let draws = 0;
  const random = (): number => {
    draws += 1;
    drawn();
    return draws === 1 ? 1 : 0;
  };
  const emu = useEmulator({ latencyMs: { min: 0, max: 60_000 }, random }, 'test');

  it('holds a request for its drawn delay while others are answered; close() cancels the wait', async () => {
    const e = emu();
    const held = callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_fault@@@held', InstanceId: e.instanceId });
    const heldFailure = apiFailure(held);
    await firstDraw;
    await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_fault@@@quick', InstanceId: e.instanceId });
    // The stats endpoint is not delayed: the held call has not been served.
    const stats = (await (await fetch(new URL('/_emulator/stats', e.apiEndpoint))).json()) as { actions: unknown };
    expect(stats.actions).toEqual({ RegisterDeviceCredential: { ok: 1, errors: {} } });
    expect(draws).toBe(2);
    await e.close();
    expect(await heldFailure).toBeInstanceOf(Error);
  });
});
