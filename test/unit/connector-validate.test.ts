import { describe, expect, it } from 'vitest';
import { type MessageRules, MAX_PAYLOAD_BYTES, checkPayload, checkPublishProperties, checkQos, checkRetain, checkTopicFilter, checkTopicName, countedTopicLength } from '../../src/connector/validate.js';
import { ValidationError } from '../../src/errors.js';

const apsara: MessageRules = { apsaraMq: true, maxPayloadBytes: 65_536, persistentSession: false };
const persistent: MessageRules = { ...apsara, persistentSession: true };
const other: MessageRules = { apsaraMq: false, maxPayloadBytes: 268_435_451, persistentSession: true };

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return (error as ValidationError).code;
  }
}

describe('topic names (publish)', () => {
  it.each([
    ['a/+', 'InvalidTopic'],
    ['demo/#', 'InvalidTopic'],
    ['+', 'InvalidTopic'],
    ['', 'InvalidTopic'],
    ['a/\u0000', 'InvalidTopic'],
    ['bad/\uD800', 'InvalidTopic'], // a high surrogate alone
    ['bad/\uDC00x', 'InvalidTopic'], // a low surrogate alone
    ['x'.repeat(65), 'InvalidTopic'], // 65 characters
  ])('%j is refused with %s', (topic, code) => {
    expect(codeOf(() => checkTopicName(topic, apsara))).toBe(code);
  });

  it.each(['a', 'demo/hello', 'x'.repeat(64), '$SYS/uploadToken', 'emoji/\u{1F600}', `${'p'.repeat(60)}/a/b`.slice(0, 64)])('%j is accepted', (topic) => {
    expect(checkTopicName(topic, apsara)).toBe(topic);
  });

  it('counts characters as code points: 64 emoji are 64 characters (128 UTF-16 units)', () => {
    const topic = '\u{1F600}'.repeat(64);
    expect(topic.length).toBe(128);
    expect(checkTopicName(topic, apsara)).toBe(topic);
    expect(codeOf(() => checkTopicName(topic + 'x', apsara))).toBe('InvalidTopic');
  });

  it('counts only the parent topic of a P2P topic <parent>/p2p/<ClientId>', () => {
    const clientId = `GID_${'g'.repeat(20)}@@@${'d'.repeat(37)}`; // 64 characters
    expect(clientId).toHaveLength(64);
    expect(countedTopicLength(`demo/p2p/${clientId}`)).toBe(4);
    expect(checkTopicName(`demo/p2p/${clientId}`, apsara)).toBe(`demo/p2p/${clientId}`);
    // Not a P2P topic (four levels): every character counts.
    expect(countedTopicLength(`demo/p2p/${clientId}/x`)).toBe(5 + 4 + 64 + 2);
    expect(codeOf(() => checkTopicName(`demo/p2p/${clientId}/x`, apsara))).toBe('InvalidTopic');
    // The parent still has its limit.
    expect(codeOf(() => checkTopicName(`${'p'.repeat(65)}/p2p/${clientId}`, apsara))).toBe('InvalidTopic');
  });

  it.each(['$SYS/x', '$SYS', '$', '$aws/things/x', '$share/g/demo'])('%j, a $ topic, is refused at once with InvalidTopic on ApsaraMQ (the broker would close the session)', (topic) => {
    let error: unknown;
    try {
      checkTopicName(topic, apsara);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: 'InvalidTopic', retryable: false, message: expect.stringMatching(/^Cannot publish to ".*": topics starting with \$ are the broker's own/) });
  });

  it("a $ topic on another broker is MQTT's to allow (AWS IoT takes $aws/…)", () => {
    expect(checkTopicName('$aws/things/x', other)).toBe('$aws/things/x');
    expect(checkTopicName('$SYS/x', other)).toBe('$SYS/x');
  });

  it('another broker: no 64-character limit, but MQTT rules stay', () => {
    expect(checkTopicName('x'.repeat(1000), other)).toHaveLength(1000);
    expect(codeOf(() => checkTopicName('a/+', other))).toBe('InvalidTopic');
    expect(codeOf(() => checkTopicName('x'.repeat(65_536), other))).toBe('InvalidTopic');
  });
});

describe('topic filters (subscribe)', () => {
  it.each(['a/#/b', 'a/b#', 'a+/b', '#/a', ''])('%j is refused with InvalidTopic', (filter) => {
    expect(codeOf(() => checkTopicFilter(filter, apsara))).toBe('InvalidTopic');
  });

  it.each(['#', 'a/#', '+/b/+', 'a/+/#', 'demo/hello'])('%j is accepted', (filter) => {
    expect(checkTopicFilter(filter, apsara)).toBe(filter);
  });

  it('$share/ is UnsupportedByService on ApsaraMQ, a valid filter elsewhere', () => {
    expect(codeOf(() => checkTopicFilter('$share/g/demo/#', apsara))).toBe('UnsupportedByService');
    expect(checkTopicFilter('$share/g/demo/#', other)).toBe('$share/g/demo/#');
    expect(codeOf(() => checkTopicFilter('$share/g', other))).toBe('InvalidTopic');
  });
});

describe('payload, QoS and retain', () => {
  it('64 KB is the limit: 65,536 bytes pass, 65,537 do not', () => {
    expect(MAX_PAYLOAD_BYTES).toBe(65_536);
    expect(checkPayload(Buffer.alloc(65_536), apsara)).toHaveLength(65_536);
    expect(codeOf(() => checkPayload(Buffer.alloc(65_537), apsara))).toBe('PayloadTooLarge');
    // Strings are counted in UTF-8 bytes: 21,846 three-byte characters are 65,538 bytes.
    expect(codeOf(() => checkPayload('\u20AC'.repeat(21_846), apsara))).toBe('PayloadTooLarge');
    expect(checkPayload(new Uint8Array([1, 2, 3]), apsara)).toEqual(Buffer.from([1, 2, 3]));
    expect(codeOf(() => checkPayload(42, apsara))).toBe('InvalidOption');
  });

  it('QoS 0-2; QoS 2 with a persistent session is UnsupportedByService on ApsaraMQ only', () => {
    expect(checkQos(undefined, apsara, 'publish')).toBe(0);
    expect(checkQos(undefined, apsara, 'subscription')).toBe(1);
    expect(checkQos(2, apsara, 'publish')).toBe(2);
    expect(codeOf(() => checkQos(3, apsara, 'publish'))).toBe('InvalidOption');
    expect(codeOf(() => checkQos(1.5, apsara, 'publish'))).toBe('InvalidOption');
    expect(codeOf(() => checkQos(2, persistent, 'publish'))).toBe('UnsupportedByService');
    expect(codeOf(() => checkQos(2, persistent, 'subscription'))).toBe('UnsupportedByService');
    expect(checkQos(2, other, 'publish')).toBe(2);
  });

  it('retain is UnsupportedByService on ApsaraMQ', () => {
    expect(checkRetain(undefined, apsara)).toBe(false);
    expect(codeOf(() => checkRetain(true, apsara))).toBe('UnsupportedByService');
    expect(checkRetain(true, other)).toBe(true);
  });
});

describe('MQTT 5 publish properties', () => {
  it('accepts the ones passed through, refuses bad values and unknown names', () => {
    expect(() => checkPublishProperties({ userProperties: { a: 'b', c: ['d', 'e'] }, messageExpiryInterval: 60, contentType: 'text/plain', responseTopic: 'reply/to', correlationData: Buffer.from('x'), payloadFormatIndicator: true }, apsara)).not.toThrow();
    expect(codeOf(() => checkPublishProperties({ messageExpiryInterval: -1 }, apsara))).toBe('InvalidOption');
    expect(codeOf(() => checkPublishProperties({ userProperties: { a: 1 } }, apsara))).toBe('InvalidOption');
    expect(codeOf(() => checkPublishProperties({ responseTopic: 'a/+' }, apsara))).toBe('InvalidTopic');
    expect(codeOf(() => checkPublishProperties({ correlationData: 'x' }, apsara))).toBe('InvalidOption');
    expect(codeOf(() => checkPublishProperties({ topicAlias: 3 }, apsara))).toBe('InvalidOption');
  });
});
