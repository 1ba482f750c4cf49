import * as teaXmlModule from '@alicloud/tea-xml';
import { describe, expect, it } from 'vitest';
import { escapeXmlText, xmlError, xmlSuccess } from '../../src/emulator/xml.js';

type TeaXmlClass = typeof teaXmlModule.default.default;
const imported: unknown = teaXmlModule.default;
const TeaXml = (typeof imported === 'function' ? imported : (imported as { default: TeaXmlClass }).default) as TeaXmlClass;

describe('XML bodies', () => {
  it('escapes markup and replaces what XML 1.0 cannot carry, so the SDK parser always reads it back', () => {
    expect(escapeXmlText('a<b>&c')).toBe('a&lt;b&gt;&amp;c');
    expect(escapeXmlText('tab\tnl\ncr\r')).toBe('tab\tnl\ncr\r');
    expect(escapeXmlText('\u0000\u0008\u001f\ud800x\udc00\uffff')).toBe('\ufffd\ufffd\ufffd\ufffdx\ufffd\ufffd');
    expect(escapeXmlText('\ud83d\ude00')).toBe('\ud83d\ude00');
    const doc = TeaXml.parseXml(xmlError({ RequestId: 'R', Code: 'C', Message: 'a\u0001<b>&\ud800' }), null) as { Error: Record<string, string> };
    expect(doc.Error).toEqual({ RequestId: 'R', Code: 'C', Message: 'a\ufffd<b>&\ufffd' });
  });

  it('nests objects, repeats list items, writes numbers and booleans as text, RequestId first', () => {
    const text = xmlSuccess('ListThings', 'RID', { List: { Total: '2', Items: ['a', 'b'], Empty: [], Flag: true, N: 3 } });
    expect(text).toBe("<?xml version='1.0' encoding='UTF-8'?><ListThingsResponse><RequestId>RID</RequestId><List><Total>2</Total><Items>a</Items><Items>b</Items><Flag>true</Flag><N>3</N></List></ListThingsResponse>");
    expect(TeaXml.parseXml(text, null)).toEqual({ ListThingsResponse: { RequestId: 'RID', List: { Total: '2', Items: ['a', 'b'], Flag: 'true', N: '3' } } });
  });
});
