import { describe, expect, it } from 'vitest';
import { BROKER_DEFAULTS, resolveBrokerOptions } from '../../src/emulator/broker-options.js';
import { checkKeepAlive, checkPublish, checkSubscribe, checkWill, describeRefusal, parentOf } from '../../src/emulator/mqtt-rules.js';

const rules = { ...resolveBrokerOptions({}), maxPayloadBytes: 65_536 };
const session = { clientId: 'GID_u@@@dev', persistent: false };
const publish = (topic: string, extra: Partial<{ payload: { length: number }; retain: boolean; qos: number }> = {}) =>
  checkPublish(rules, { topic, payload: { length: 1 }, retain: false, qos: 1, ...extra }, session);

describe('broker rules (pure checks)', () => {
  it('a topic\'s parent is its first level, empty or a wildcard included', () => {
    expect(['demo/a/b', 'demo', '/p2p/x', '#', '+/x', '$share/g/demo/x'].map(parentOf)).toEqual(['demo', 'demo', '', '#', '+', '$share']);
  });

  it('a PUBLISH is checked parent first, then length, payload, retain, QoS 2 in a persistent session', () => {
    const long = `other/${'x'.repeat(70)}`;
    expect(publish(long, { payload: { length: 70_000 }, retain: true })?.rule).toBe('parentTopic');
    expect(publish(`demo/${'x'.repeat(60)}`, { payload: { length: 70_000 } })?.rule).toBe('topicLength');
    expect(publish(`demo/${'x'.repeat(59)}`, { payload: { length: 65_537 }, retain: true })?.rule).toBe('payloadSize');
    expect(publish('demo/x', { payload: { length: 65_536 }, retain: true })).toMatchObject({ rule: 'retain', action: 'disconnect', reasonCode: 0x9a });
    expect(checkPublish(rules, { topic: 'demo/x', payload: { length: 1 }, retain: false, qos: 2 }, { ...session, persistent: true })).toMatchObject({ rule: 'qos2PersistentSession', reasonCode: 0x9b });
    expect(publish('demo/x', { qos: 2 })).toBeUndefined();
    expect(publish('sim/7')).toBeUndefined();
  });

  it('a filter is checked shared, $SYS, parent, length, P2P, QoS 2 in a persistent session, then the count', () => {
    const none = new Set<string>();
    const check = (topic: string, qos = 1, held: ReadonlySet<string> = none, persistent = false) =>
      checkSubscribe(rules, { topic, qos }, { ...session, persistent }, held);
    expect(check('$share/g/other/x')).toMatchObject({ rule: 'sharedSubscription', action: 'deny' });
    expect(check('$SYS/#')).toMatchObject({ rule: 'sysTopic', action: 'deny' });
    expect(check('#')).toMatchObject({ rule: 'parentTopic', action: 'disconnect', reasonCode: 0x87 });
    expect(check(`demo/${'x'.repeat(60)}`)).toMatchObject({ rule: 'topicLength', action: 'deny' });
    expect(check('demo/p2p/GID_u@@@other')).toMatchObject({ rule: 'p2pSubscription' });
    expect(check('demo/p2p/GID_u@@@dev')).toBeUndefined();
    expect(check('demo/x', 2, none, true)).toMatchObject({ rule: 'qos2PersistentSession', action: 'deny' });
    const thirty = new Set(Array.from({ length: 30 }, (_, i) => `demo/${i}`));
    expect(check('demo/30', 1, thirty)).toMatchObject({ rule: 'subscriptions', reason: expect.stringContaining('number 31') });
    expect(check('demo/0', 0, thirty)).toBeUndefined();
  });

  it('wills and Keep Alive', () => {
    expect(checkWill(rules, { retain: false })).toMatchObject({ rule: 'will', action: 'disconnect', reasonCode: 0x83 });
    expect(checkWill(resolveBrokerOptions({ willMessages: 'ignore' }), {})).toMatchObject({ rule: 'will', action: 'ignore' });
    expect(checkWill(resolveBrokerOptions({ willMessages: 'allow' }), { retain: true })).toMatchObject({ rule: 'retain', reasonCode: 0x9a });
    expect(checkWill(resolveBrokerOptions({ willMessages: 'allow' }), { retain: false })).toBeUndefined();
    expect(checkWill(rules, undefined)).toBeUndefined();
    expect(checkKeepAlive(rules, 480)).toBeUndefined();
    expect(checkKeepAlive(rules, 481)).toMatchObject({ rule: 'keepAlive', action: 'cap', seconds: 480 });
    expect(checkKeepAlive(rules, 0)).toMatchObject({ seconds: 480 });
    expect(checkKeepAlive(resolveBrokerOptions({ lenient: true }), 0)).toBeUndefined();
  });

  it('a refusal\'s log line names the rule, its option and flag, the client and the outcome', () => {
    const refusal = publish('other/x');
    expect(refusal && describeRefusal(refusal, 'GID_u@@@dev')).toBe(
      "MQTT rule parentTopic (option parentTopics, flag --parent-topics): GID_u@@@dev: PUBLISH under parent topic 'other', which was not created on the instance (the service disconnects the client) — refused, the client is disconnected",
    );
    const sys = checkSubscribe(rules, { topic: '$SYS/#', qos: 0 }, session, new Set());
    expect(sys && describeRefusal(sys, undefined)).toMatch(/^MQTT rule sysTopic \(always on\): a client: /);
  });
});

describe('broker options', () => {
  it('default to the service\'s rules', () => {
    const resolved = resolveBrokerOptions({});
    expect([...(resolved.parentTopics ?? [])]).toEqual(['demo', 'sim']);
    expect(resolved).toMatchObject({ maxTopicLength: 64, maxSubscriptions: 30, maxKeepAliveSeconds: 480, retainedMessages: 'refuse', willMessages: 'refuse', sharedSubscriptions: 'refuse', qos2PersistentSessions: 'refuse', lenient: false });
    expect(BROKER_DEFAULTS).toMatchObject({ maxPacketBytes: 131_072, maxQueuedBytes: 8_388_608, drainTimeoutMs: 10_000 });
  });

  it('lenient turns every rule off, but not the guards, and an explicit rule wins', () => {
    expect(resolveBrokerOptions({ lenient: true })).toMatchObject({
      parentTopics: undefined, maxTopicLength: Infinity, maxSubscriptions: Infinity, maxKeepAliveSeconds: Infinity,
      retainedMessages: 'allow', willMessages: 'allow', sharedSubscriptions: 'allow', qos2PersistentSessions: 'allow',
      maxPacketBytes: 131_072, maxQueuedBytes: 8_388_608,
    });
    expect(resolveBrokerOptions({ lenient: true, maxSubscriptions: 5, willMessages: 'refuse' })).toMatchObject({ maxSubscriptions: 5, willMessages: 'refuse', retainedMessages: 'allow' });
  });
});
