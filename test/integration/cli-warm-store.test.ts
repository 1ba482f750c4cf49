/**
 * A fleet whose every credential is in the store needs no OpenAPI: `provision`, `simulate --endpoint`,
 * `provisionFleet` and `connect` make no network request at all (a gateway that boots without OpenAPI access still
 * starts), every local check (the store's modes, the account keys) runs before the first request, and the probe of
 * the endpoint, made only before a real call, waits as long as `--timeout-ms` says. The endpoint in these tests is a
 * real HTTP server that counts what reaches it; the store is warmed first against the emulator.
 */
import { chmod } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { FileCredentialStore } from '../../src/provisioner/file-store.js';
import { provisionFleet } from '../../src/provisioner/fleet.js';
import { cli, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';
import { sendJson, startHttpServer } from '../helpers/http.js';

const emulator = useEmulator({ wsPort: false });

function keys(): NodeJS.ProcessEnv {
  const e = emulator();
  return { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret };
}

/** An endpoint that counts the requests reaching it and answers each like the OpenAPI refusing the account key. */
function countingEndpoint(): ReturnType<typeof startHttpServer> {
  return startHttpServer((_request, response) => sendJson(response, 404, { Code: 'InvalidAccessKeyId.NotFound', RequestId: 'counted', Message: 'Specified access key is not found.' }));
}

/** A TCP server that takes connections and never answers: a request to it can only time out. */
async function silentEndpoint(): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  onTestFinished(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as { port: number };
  return `http://127.0.0.1:${port}`;
}

/** `provision` of `count` devices `<group>@@@<prefix><i>` against the emulator, into `store`. */
async function warm(store: string, group: string, prefix: string, count: number): Promise<void> {
  const e = emulator();
  const run = await cli(['provision', '--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--group-id', group, '--prefix', prefix, '--count', String(count), '--store', store, '--json'], keys());
  expect(run.code, run.stderr).toBe(0);
}

describe('a warm store makes no network request', () => {
  it('provision: 0 requests reach the endpoint, and every device comes from the store', async () => {
    const store = join(await tempDir(), 'store');
    await warm(store, 'GID_warm', 'dev-', 5);
    const counter = await countingEndpoint();
    const run = await cli(['provision', '--endpoint', counter.url, '--instance-id', emulator().instanceId, '--group-id', 'GID_warm', '--count', '5', '--store', store, '--json'], keys());
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ provisioned: 5, fromStore: 5, apiCalls: 0, failed: [] });
    expect(counter.requests).toBe(0);
  });

  it('provision: one device missing from the store makes the probe, then the call', async () => {
    const store = join(await tempDir(), 'store');
    await warm(store, 'GID_warm', 'one-', 2);
    const counter = await countingEndpoint();
    const run = await cli(['provision', '--endpoint', counter.url, '--instance-id', emulator().instanceId, '--group-id', 'GID_warm', '--prefix', 'one-', '--count', '3', '--store', store, '--json'], keys());
    // The counting endpoint answers like the OpenAPI: the probe passes, and the one call is refused.
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({ provisioned: 2, fromStore: 2, apiCalls: 1, failed: [{ clientId: 'GID_warm@@@one-2', code: 'InvalidAccessKeyId.NotFound' }] });
    expect(counter.requests).toBe(2); // the probe, then the one GetDeviceCredential
  });

  it('simulate --endpoint: the whole run against the emulator\'s broker, 0 requests to the OpenAPI', async () => {
    const store = join(await tempDir(), 'store');
    await warm(store, 'GID_sim', 'sim-', 4);
    const counter = await countingEndpoint();
    const e = emulator();
    const run = await cli(
      ['simulate', '--endpoint', counter.url, '--instance-id', e.instanceId, '--broker-url', e.mqttUrl, '--store', store, '--devices', '4', '--duration', '0', '--publish-interval', '0', '--no-progress', '--json'],
      keys(),
    );
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ devices: 4, provisioned: 4, connected: 4 });
    expect(counter.requests).toBe(0);
  });

  it('provisionFleet: a FileCredentialStore that holds every credential, a dead endpoint, no request and no failure', async () => {
    const store = join(await tempDir(), 'store');
    await warm(store, 'GID_lib', 'dev-', 3);
    const counter = await countingEndpoint();
    const e = emulator();
    const ids = ['GID_lib@@@dev-0', 'GID_lib@@@dev-1', 'GID_lib@@@dev-2'];
    const result = await provisionFleet(ids, { endpoint: counter.url, instanceId: e.instanceId, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, store: new FileCredentialStore(store) });
    expect(result).toMatchObject({ provisioned: 3, fromStore: 3, apiCalls: 0, failed: [] });
    expect(counter.requests).toBe(0);
  });

  it('connect with the account keys set and its credential stored: 0 requests, published', async () => {
    const store = join(await tempDir(), 'store');
    await warm(store, 'GID_demo', 'warm-', 1);
    const counter = await countingEndpoint();
    const e = emulator();
    const run = await cli(['connect', '--endpoint', counter.url, '--instance-id', e.instanceId, '--broker-url', e.mqttUrl, '--store', store, '--client-id', 'GID_demo@@@warm-0', '--publish', 'demo/x', '--message', 'hi'], keys());
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toBe('published to demo/x as GID_demo@@@warm-0\n');
    expect(counter.requests).toBe(0);
  });
});

describe('local checks come before the first request', () => {
  it('provision with a store of mode 0755 is refused (StoreInsecure) with 0 requests', async () => {
    const store = join(await tempDir(), 'store');
    await warm(store, 'GID_open', 'dev-', 1);
    await chmod(store, 0o755);
    const counter = await countingEndpoint();
    const run = await cli(['provision', '--endpoint', counter.url, '--instance-id', emulator().instanceId, '--group-id', 'GID_open', '--count', '2', '--store', store], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^StoreInsecure: /m);
    expect(counter.requests).toBe(0);
  });

  it('connect with a store of mode 0755 and no credential for the ClientId: StoreInsecure, 0 requests', async () => {
    const store = join(await tempDir(), 'store');
    await warm(store, 'GID_open', 'dev-', 1);
    await chmod(store, 0o755);
    const counter = await countingEndpoint();
    const e = emulator();
    const run = await cli(['connect', '--endpoint', counter.url, '--instance-id', e.instanceId, '--broker-url', e.mqttUrl, '--store', store, '--client-id', 'GID_open@@@new', '--publish', 'demo/x', '--message', 'm'], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^StoreInsecure: /);
    expect(counter.requests).toBe(0);
  });

  it('connect without account keys and no stored credential: MissingAccessKey, 0 requests', async () => {
    const counter = await countingEndpoint();
    const run = await cli(['connect', '--endpoint', counter.url, '--instance-id', 'mqtt-x', '--store', join(await tempDir(), 's'), '--client-id', 'GID_demo@@@nokeys', '--publish', 'demo/x', '--message', 'm'], {});
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^MissingAccessKey: /);
    expect(counter.requests).toBe(0);
  });
});

describe('the probe waits as long as --timeout-ms says', () => {
  it('provision --timeout-ms 250 against an endpoint that never answers: RequestTimeout within 250 ms, naming --endpoint', async () => {
    const endpoint = await silentEndpoint();
    const run = await cli(['provision', '--endpoint', endpoint, '--instance-id', 'mqtt-x', '--group-id', 'GID_slow', '--count', '3', '--store', join(await tempDir(), 's'), '--timeout-ms', '250'], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`RequestTimeout: ${endpoint} did not answer within 250 ms. Check --endpoint, a firewall or proxy in between, and the network.\n`);
  });

  it('connect --timeout-ms 250 against an endpoint that never answers: the same', async () => {
    const endpoint = await silentEndpoint();
    const run = await cli(['connect', '--endpoint', endpoint, '--instance-id', 'mqtt-x', '--client-id', 'GID_demo@@@slow', '--store', join(await tempDir(), 's'), '--timeout-ms', '250', '--publish', 'demo/x', '--message', 'm'], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`RequestTimeout: ${endpoint} did not answer within 250 ms. Check --endpoint, a firewall or proxy in between, and the network.\n`);
  });

  it('connect --timeout-ms with --credential-file is refused: the file needs no OpenAPI', async () => {
    const run = await cli(['connect', '--credential-file', 'dev-1.json', '--timeout-ms', '250', '--publish', 'demo/x', '--message', 'm'], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^ConflictingOptions: --credential-file and --timeout-ms cannot be used together/);
  });
});
