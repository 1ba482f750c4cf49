import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { resolve } from 'node:path';
import { Aedes } from 'aedes';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { AEDES_VERSION, aedesRefusal, assertAedesVersion, checkAedesVersion, fitClient, installedAedesVersion, type PacketRefusal } from '../../src/emulator/aedes-adapter.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';

const manifest = JSON.parse(await readFile(resolve(import.meta.dirname, '../../package.json'), 'utf8')) as {
  peerDependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

describe('aedes-adapter: the one door to aedes', () => {
  it('was written for the aedes package.json pins, and that is the one installed here', () => {
    expect(manifest.peerDependencies['aedes']).toBe(AEDES_VERSION);
    expect(manifest.devDependencies['aedes']).toBe(AEDES_VERSION);
    expect(installedAedesVersion()).toBe(AEDES_VERSION);
    expect(() => assertAedesVersion()).not.toThrow();
  });

  it('refuses another aedes with a typed error naming both versions and the install command', () => {
    expect(() => checkAedesVersion(AEDES_VERSION)).not.toThrow();
    for (const found of ['2.0.0', '2.0.0-beta.2', '1.2.0', undefined]) {
      let error: unknown;
      try {
        checkAedesVersion(found);
      } catch (e) {
        error = e;
      }
      expect(isApsaraMqDeviceError(error, 'DependencyMismatch'), String(found)).toBe(true);
      const { message, remedy, retryable, name } = error as { message: string; remedy: string; retryable: boolean; name: string };
      expect(name).toBe('ConfigurationError');
      expect(message).toContain(`aedes ${AEDES_VERSION}`);
      expect(message).toContain(found === undefined ? 'of an unknown version' : `aedes ${found} is installed`);
      expect(remedy).toBe(`npm install aedes@${AEDES_VERSION}`);
      expect(retryable).toBe(false);
    }
  });

  it("tells aedes' own refusals by their text, and nothing else", () => {
    expect(aedesRefusal(Object.assign(new Error('packet too large'), { size: 300 }))).toEqual({ kind: 'packetTooLarge', size: 300 });
    expect(aedesRefusal(new Error('drain timeout'))).toEqual({ kind: 'drainTimeout' });
    expect(aedesRefusal(new Error('invalid subscription identifier 0'))).toEqual({ kind: 'subscriptionIdentifier', message: 'invalid subscription identifier 0' });
    for (const other of ['keep alive timeout', 'connection closed', 'Invalid protocol']) expect(aedesRefusal(new Error(other)), other).toBeUndefined();
  });
});

describe('aedes-adapter: fitClient contains a throw out of aedes', () => {
  it("a packet listener of aedes' that throws (an aedes bug) closes that client through onRefused instead of ending the process", async () => {
    const broker = await Aedes.createBroker();
    const server = createServer();
    onTestFinished(async () => {
      await new Promise<void>((done) => broker.close(() => done()));
      server.close();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
    onTestFinished(() => {
      socket.destroy();
    });
    const [conn] = await accepted;
    const client = broker.handle(conn);
    // Stands for a bug of aedes' own handling: a listener beside aedes' on the client's parser.
    (client as unknown as { _parser: NodeJS.EventEmitter })._parser.on('packet', () => {
      throw new TypeError('boom');
    });
    const refused = new Promise<[PacketRefusal, string, number]>((resolveRefusal) => {
      fitClient(client, { inspect: () => undefined, wrapDelivery: (deliver) => deliver, onRefused: (...args) => resolveRefusal(args) });
    });
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'a', clean: true, keepalive: 0 }));
    const [refusal, stage, version] = await refused;
    expect(refusal).toMatchObject({ rule: 'unhandledPacket', reasonCode: 0x83, returnCode: 3 });
    expect(refusal.reason).toBe('a CONNECT aedes failed on (boom)');
    expect([stage, version]).toEqual(['connect', 4]);
  });
});
