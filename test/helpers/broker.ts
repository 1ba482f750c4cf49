import type { IDisconnectPacket } from 'mqtt-packet';
import type { MqttClient } from 'mqtt';
import type { Emulator } from '../../src/emulator/index.js';
import type { Logger } from '../../src/util/logger.js';
import { signDeviceCredential, signSignature, type MqttCredentials } from '../../src/signer/mqtt.js';
import { registerDevice } from './emulator.js';

/** A registered device's MQTT credentials (registered through pop-core). */
export async function device(e: Emulator, clientId: string): Promise<MqttCredentials> {
  return signDeviceCredential(await registerDevice(e, clientId));
}

/** Signature-mode (account key) credentials for any ClientId of the instance. */
export function accountLogin(e: Emulator, clientId: string): MqttCredentials {
  return signSignature({ accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, instanceId: e.instanceId, clientId });
}

/** How a connection ended: the broker's DISCONNECT (MQTT 5), if it sent one. */
export interface Ending {
  readonly disconnect: IDisconnectPacket | undefined;
}

/** Resolves when the client's connection closes, with the DISCONNECT the broker sent before, if any. */
export function ended(client: MqttClient): Promise<Ending> {
  return new Promise((resolve) => {
    let disconnect: IDisconnectPacket | undefined;
    client.once('disconnect', (packet) => {
      disconnect = packet;
    });
    client.once('close', () => resolve({ disconnect }));
  });
}

/** A logger that keeps its lines, for checking what the broker said. */
export function captureLogger(): Logger & { readonly lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (message: string): void => {
    lines.push(`${level} ${message}`);
  };
  return { lines, debug: keep('debug'), info: keep('info'), warn: keep('warn'), error: keep('error') };
}
