import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { propertyProblem } from '../../src/emulator/mqtt5-properties.js';

/** What mqtt-packet makes of these bytes (an MQTT 5 parser), as aedes receives it. */
function parsed(hex: string): Packet {
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  let packet: Packet | undefined;
  parser.on('packet', (p: Packet) => {
    packet ??= p;
  });
  // mqtt-packet reads the bytes left of a property it could not read as the start of another packet, and fails on
  // them: the broker has refused the client by then.
  parser.on('error', () => undefined);
  parser.parse(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));
  if (!packet) throw new Error(`mqtt-packet refused ${hex}`);
  return packet;
}

describe('propertyProblem: MQTT 5 properties as mqtt-packet leaves them', () => {
  it('passes packets without properties (MQTT 3.1.1) and well-formed ones', () => {
    expect(propertyProblem({ cmd: 'publish' })).toBeUndefined();
    expect(propertyProblem({ cmd: 'pingreq', properties: { anything: 1 } })).toBeUndefined();
    // Topic Alias resolved by aedes (set to undefined in place), User Properties given twice under one name.
    expect(propertyProblem({ cmd: 'publish', properties: { topicAlias: undefined, userProperties: { a: ['1', '2'], b: 'x' }, contentType: 'text/plain' } })).toBeUndefined();
    expect(propertyProblem({ cmd: 'connect', properties: { maximumPacketSize: 100, receiveMaximum: 1, sessionExpiryInterval: 0xffffffff }, will: { properties: { willDelayInterval: 5 } } })).toBeUndefined();
    expect(propertyProblem({ cmd: 'subscribe', properties: { subscriptionIdentifier: 268_435_455 } })).toBeUndefined();
  });

  it('finds the truncated Response Topic of the crash as mqtt-packet parses it: 0x81', () => {
    const packet = parsed('32 0e 0006 64656d6f2f61 0001 03 08 0009 6162');
    expect((packet as { properties?: unknown }).properties).toEqual({ responseTopic: null });
    expect(propertyProblem(packet)).toEqual({ reasonCode: 0x81, reason: 'a PUBLISH whose property responseTopic is cut short or not a valid string' });
  });

  it('a property given twice is a Protocol Error; of another packet, or of the wrong type, Malformed', () => {
    expect(propertyProblem(parsed('32 10 0006 64656d6f2f61 0001 05 23 0001 23 0002'))?.reasonCode).toBe(0x82);
    expect(propertyProblem({ cmd: 'unsubscribe', properties: { reasonString: 'x' } })?.reasonCode).toBe(0x81);
    expect(propertyProblem({ cmd: 'puback', properties: { reasonString: 5 } })?.reasonCode).toBe(0x81);
    expect(propertyProblem({ cmd: 'publish', properties: { messageExpiryInterval: -1 } })?.reasonCode).toBe(0x81);
    expect(propertyProblem({ cmd: 'subscribe', properties: { subscriptionIdentifier: false } })?.reasonCode).toBe(0x81);
    expect(propertyProblem({ cmd: 'publish', properties: { userProperties: { a: null } } })?.reasonCode).toBe(0x81);
    expect(propertyProblem({ cmd: 'connect', will: { properties: { maximumQoS: 1 } } })).toEqual({ reasonCode: 0x81, reason: 'the Will Properties of a CONNECT with the property maximumQoS, which that packet does not have (MQTT 5.0 §2.2.2.2)' });
  });

  it('values MQTT 5 forbids: Maximum Packet Size or Receive Maximum 0, a Subscription Identifier from a client (0x82)', () => {
    expect(propertyProblem({ cmd: 'connect', properties: { maximumPacketSize: 0 } })).toEqual({ reasonCode: 0x82, reason: 'a CONNECT with Maximum Packet Size 0 (MQTT 5.0 §3.1.2.11.4: a Protocol Error)' });
    expect(propertyProblem({ cmd: 'connect', properties: { receiveMaximum: 0 } })?.reasonCode).toBe(0x82);
    expect(propertyProblem({ cmd: 'publish', properties: { subscriptionIdentifier: 3 } })?.reasonCode).toBe(0x82);
  });
});
