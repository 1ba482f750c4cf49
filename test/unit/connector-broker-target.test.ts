/**
 * The connector hands mqtt.js the broker's protocol, host, port and WebSocket path read once per URL, not the URL
 * (which mqtt.js would parse again for every client, keeping more per client). Whatever the URL, mqtt.js must end up
 * with the same target as from the URL itself: checked against mqtt.js's own reading, with clients that never connect.
 */
import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { brokerTarget } from '../../src/connector/broker-target.js';

/**
 * What mqtt.js keeps of where to connect, for a client it was given `from` (a URL, or options). The client never
 * connects (`manualConnect`): it has no socket nor timer to end.
 */
function kept(from: string | mqtt.IClientOptions): Record<string, unknown> {
  const client = typeof from === 'string' ? mqtt.connect(from, { manualConnect: true }) : mqtt.connect({ ...from, manualConnect: true });
  const { protocol, host, port, path } = client.options as Record<string, unknown>;
  return { protocol, host, port, path };
}

describe('brokerTarget', () => {
  it.each([
    'mqtt://127.0.0.1:1883',
    'mqtt://broker.example.com',
    'mqtts://mqtt-cn-x.mqtt.aliyuncs.com:8883',
    'mqtt://[::1]:1884',
    'ws://127.0.0.1:8080/mqtt',
    'wss://mqtt-cn-x.mqtt.aliyuncs.com/mqtt',
    'ws://[::1]:80/mqtt?x=1',
  ])('%s: mqtt.js keeps the same protocol, host, port and path as from the URL', (url) => {
    expect(kept(brokerTarget(url))).toEqual(kept(url));
  });

  it('is read once per URL: the same frozen target again, a new one for another URL', () => {
    const a = brokerTarget('mqtt://127.0.0.1:1');
    expect(brokerTarget('mqtt://127.0.0.1:1')).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(brokerTarget('mqtt://127.0.0.1:2')).toEqual({ protocol: 'mqtt', host: '127.0.0.1', port: 2 });
  });
});
