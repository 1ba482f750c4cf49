/**
 * `Format=XML` bodies, shaped as the service's XML (reference §1.0 and the OnsMqtt metadata's XML examples):
 * `<{Action}Response>` holding `<RequestId>` first and then the JSON body's fields as elements; an object becomes
 * nested elements, an array becomes the element repeated once per item (`<ClientIdList>a</ClientIdList>
 * <ClientIdList>b</ClientIdList>`, nothing for an empty array), numbers and booleans become their text. Errors are
 * `<Error>` with the JSON error body's fields, which is the root element the official SDK's V3 client reads
 * (`respMap["Error"]` in `@alicloud/openapi-client`). The same mapping as `@alicloud/tea-xml`'s `toXML` (xml2js'
 * builder), whose `parseXml` the SDKs read it back with.
 */

/** Content-Type of an XML answer: the exact string `@alicloud/openapi-client` tests before parsing an XML error. */
export const XML_CONTENT_TYPE = 'text/xml;charset=utf-8';

const XML_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>";

/**
 * Escape text for an element. Characters XML 1.0 cannot carry at all (controls other than tab, LF and CR; lone
 * surrogates; U+FFFE/U+FFFF) become U+FFFD, so that the document always parses.
 */
export function escapeXmlText(text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;');
}

/** A name usable as an element name; anything else (never produced by the emulator's own bodies) is replaced. */
function elementName(name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_.-]*$/.test(name) ? name : 'Item';
}

function element(name: string, value: unknown): string {
  const tag = elementName(name);
  if (Array.isArray(value)) return value.map((item) => element(name, item)).join('');
  if (value === null || value === undefined) return `<${tag}/>`;
  if (typeof value === 'object') return `<${tag}>${fields(value as Record<string, unknown>)}</${tag}>`;
  return `<${tag}>${escapeXmlText(String(value))}</${tag}>`;
}

function fields(body: Readonly<Record<string, unknown>>): string {
  return Object.entries(body)
    .map(([name, value]) => element(name, value))
    .join('');
}

/** A success body: `<{Action}Response>` with `RequestId` first, then the body's fields in order. */
export function xmlSuccess(action: string, requestId: string, body: Readonly<Record<string, unknown>>): string {
  const root = elementName(`${action}Response`);
  return `${XML_DECLARATION}<${root}>${element('RequestId', requestId)}${fields(body)}</${root}>`;
}

/** An error body: `<Error>` with the fields of the JSON error body, in its order. */
export function xmlError(body: Readonly<Record<string, unknown>>): string {
  return `${XML_DECLARATION}<Error>${fields(body)}</Error>`;
}
