import * as teaXmlModule from '@alicloud/tea-xml';
import { describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { commonParams, signed, useEmulator } from '../helpers/emulator.js';
import { officialCall, officialClient, officialFailure } from '../helpers/openapi-client.js';

/** The XML parser of Alibaba's Node SDKs (xml2js underneath, explicitArray off), an oracle independent of the emulator. */
type TeaXmlClass = typeof teaXmlModule.default.default;
const imported: unknown = teaXmlModule.default;
const TeaXml = (typeof imported === 'function' ? imported : (imported as { default: TeaXmlClass }).default) as TeaXmlClass;
const parseXml = (text: string): Record<string, unknown> => TeaXml.parseXml(text, null) as Record<string, unknown>;

interface XmlReply {
  status: number;
  type: string | null;
  text: string;
  doc: Record<string, unknown>;
}

/** POST a V2-signed form with Format=XML (or `format`), read the raw answer and parse it. */
async function xmlCall(e: Emulator, action: string, extra: Record<string, string>, options: { format?: string; secret?: string } = {}): Promise<XmlReply> {
  const params = signed(commonParams(e, action, { ...extra, Format: options.format ?? 'XML' }), 'POST', options.secret ?? e.accessKeySecret);
  const response = await fetch(e.apiEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() });
  const text = await response.text();
  return { status: response.status, type: response.headers.get('content-type'), text, doc: parseXml(text) };
}

describe('Format=XML', () => {
  const emu = useEmulator();

  it('answers success bodies as <{Action}Response> with RequestId first, as the service XML examples are shaped', async () => {
    const e = emu();
    const params = { ClientId: 'GID_xml@@@dev-1', InstanceId: e.instanceId };
    const reply = await xmlCall(e, 'RegisterDeviceCredential', params);
    expect(reply.status).toBe(200);
    expect(reply.type).toBe('text/xml;charset=utf-8');
    expect(reply.text).toMatch(/^<\?xml version='1\.0' encoding='UTF-8'\?><RegisterDeviceCredentialResponse><RequestId>[0-9A-F-]{36}<\/RequestId><DeviceCredential><ClientId>/);
    const root = reply.doc['RegisterDeviceCredentialResponse'] as { RequestId: string; DeviceCredential: Record<string, string> };
    expect(Object.keys(root)).toEqual(['RequestId', 'DeviceCredential']);
    expect(Object.keys(root.DeviceCredential)).toEqual(['ClientId', 'InstanceId', 'DeviceAccessKeyId', 'DeviceAccessKeySecret', 'CreateTime', 'UpdateTime']);
    expect(root.DeviceCredential['ClientId']).toBe('GID_xml@@@dev-1');
    expect(root.DeviceCredential['CreateTime']).toMatch(/^\d{13}$/);

    // The same credential as JSON answers it.
    const json = (await (await fetch(e.apiEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(signed(commonParams(e, 'GetDeviceCredential', params), 'POST', e.accessKeySecret)).toString() })).json()) as { DeviceCredential: Record<string, unknown> };
    expect(Object.fromEntries(Object.entries(json.DeviceCredential).map(([k, v]) => [k, String(v)]))).toEqual(root.DeviceCredential);

    const unregistered = await xmlCall(e, 'UnRegisterDeviceCredential', params, { format: 'xml' });
    expect(Object.keys(unregistered.doc['UnRegisterDeviceCredentialResponse'] as object)).toEqual(['RequestId']);
  });

  it('lists as repeated elements (one per ClientId), the way the SDK XML reader turns them back into a list', async () => {
    const e = emu();
    for (const id of ['a', 'b']) await xmlCall(e, 'RegisterDeviceCredential', { ClientId: `GID_xmllist@@@${id}`, InstanceId: e.instanceId });
    const reply = await xmlCall(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_xmllist', PageSize: '1' });
    expect(reply.text).toContain('<ClientIdList>GID_xmllist@@@a</ClientIdList><PageNo>1</PageNo>');
    const list = (reply.doc['ListDeviceCredentialClientIdResponse'] as { DeviceCredentialClientIdList: Record<string, unknown> }).DeviceCredentialClientIdList;
    expect(list).toMatchObject({ Total: '2', ClientIdList: 'GID_xmllist@@@a', PageNo: '1', PageSize: '1' });
    const all = await xmlCall(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_xmllist', PageSize: '10' });
    expect((all.doc['ListDeviceCredentialClientIdResponse'] as { DeviceCredentialClientIdList: { ClientIdList: unknown } }).DeviceCredentialClientIdList.ClientIdList).toEqual(['GID_xmllist@@@a', 'GID_xmllist@@@b']);
    const none = await xmlCall(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_xmlnone', PageSize: '10' });
    expect(none.text).not.toContain('<ClientIdList>');
  });

  it('answers errors as <Error> with the JSON error fields, escaped (the string to sign holds &)', async () => {
    const e = emu();
    const missing = await xmlCall(e, 'GetDeviceCredential', { ClientId: 'GID_xml@@@none', InstanceId: e.instanceId });
    expect(missing.status).toBe(400);
    expect(missing.type).toBe('text/xml;charset=utf-8');
    const error = missing.doc['Error'] as Record<string, string>;
    expect(Object.keys(error)).toEqual(['RequestId', 'HostId', 'Code', 'Message', 'Recommend']);
    expect(error).toMatchObject({ Code: 'DeviceCredentialNotFound', HostId: 'onsmqtt.cn-hangzhou.aliyuncs.com' });
    expect(error['Recommend']).toContain('&product=OnsMqtt&requestId=');

    const badSignature = await xmlCall(e, 'GetDeviceCredential', { ClientId: 'GID_xml@@@none', InstanceId: e.instanceId }, { secret: 'wrong' });
    expect((badSignature.doc['Error'] as Record<string, string>)['Message']).toMatch(/server string to sign is:POST&%2F&AccessKeyId%3D/);
  });

  it('a request whose parameters do not even decode still gets its error in XML when the query asks for it', async () => {
    const e = emu();
    const response = await fetch(`${e.apiEndpoint}/?Format=XML&ClientId=%E0%A4`, { method: 'POST' });
    const doc = parseXml(await response.text());
    expect(response.status).toBe(400);
    expect((doc['Error'] as Record<string, string>)['Code']).toBe('ParameterCheckFailed');
  });

  it("the official client's V3 path: reads the XML error itself (it parses <Error>), and an XML success as text", async () => {
    const e = emu();
    const client = officialClient(e);
    const params = { ClientId: 'GID_xml@@@v3', InstanceId: e.instanceId, Format: 'XML' };
    const failure = await officialFailure(officialCall(client, 'GetDeviceCredential', params));
    expect(failure.code).toBe('DeviceCredentialNotFound');
    expect(failure.data.statusCode).toBe(400);
    const ok = await officialCall<string>(client, 'RegisterDeviceCredential', params, { bodyType: 'string' });
    const root = parseXml(ok.body)['RegisterDeviceCredentialResponse'] as { DeviceCredential: Record<string, string> };
    expect(root.DeviceCredential['ClientId']).toBe('GID_xml@@@v3');
  });

  it('JSON stays the default, and any Format other than XML is JSON', async () => {
    const e = emu();
    const params = signed(commonParams(e, 'GetDeviceCredential', { ClientId: 'GID_xml@@@none', InstanceId: e.instanceId, Format: 'YAML' }), 'POST', e.accessKeySecret);
    const response = await fetch(e.apiEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() });
    expect(response.headers.get('content-type')).toBe('application/json;charset=utf-8');
    expect(((await response.json()) as { Code: string }).Code).toBe('DeviceCredentialNotFound');
  });
});
