import * as openapiModule from '@alicloud/openapi-client';
import { Config, OpenApiRequest, Params } from '@alicloud/openapi-client';
import type { Emulator } from '../../src/emulator/index.js';

/** The package's `Client` class. It is a CommonJS module: TypeScript (NodeNext) and Vite disagree on what its default import is. */
type OpenApiClass = typeof openapiModule.default.default;
const imported: unknown = openapiModule.default;
const OpenApi = (typeof imported === 'function' ? imported : (imported as { default: OpenApiClass }).default) as OpenApiClass;
/** An `@alicloud/openapi-client` Client. */
export type OpenApi = InstanceType<OpenApiClass>;

/** The runtime options argument of `callApi`; `{}` means the SDK's defaults (no retries). */
type Runtime = Parameters<OpenApi['callApi']>[2];

/**
 * Alibaba's own `@alicloud/openapi-client`, configured as a generated onsmqtt SDK would be, pointed at the emulator:
 * its default signature is V3 (`ACS3-HMAC-SHA256`); `signatureAlgorithm: 'v2'` switches it to the query-string method.
 */
export function officialClient(
  emulator: Pick<Emulator, 'apiEndpoint' | 'accessKeyId' | 'accessKeySecret'>,
  config: { signatureAlgorithm?: string; accessKeySecret?: string; accessKeyId?: string } = {},
): OpenApi {
  return new OpenApi(
    new Config({
      accessKeyId: config.accessKeyId ?? emulator.accessKeyId,
      accessKeySecret: config.accessKeySecret ?? emulator.accessKeySecret,
      endpoint: new URL(emulator.apiEndpoint).host,
      protocol: 'HTTP',
      ...(config.signatureAlgorithm === undefined ? {} : { signatureAlgorithm: config.signatureAlgorithm }),
    }),
  );
}

/** What `callApi` resolves with for `bodyType` json / string. */
export interface OfficialResponse<T> {
  statusCode: number;
  headers: Record<string, string>;
  body: T;
}

/**
 * Call one action the way the generated SDK does: `Params` {action, version 2020-04-20, protocol HTTP, pathname /,
 * method POST, authType AK, style RPC, reqBodyType formData, bodyType json} with the business parameters in the query
 * (as `@alicloud/onsmqtt20200420` puts them), or in the form body with `where: 'body'`.
 */
export async function officialCall<T = Record<string, unknown>>(
  client: OpenApi,
  action: string,
  parameters: Record<string, string>,
  options: { where?: 'query' | 'body'; method?: 'POST' | 'GET'; bodyType?: 'json' | 'string' } = {},
): Promise<OfficialResponse<T>> {
  const params = new Params({
    action,
    version: '2020-04-20',
    protocol: 'HTTP',
    pathname: '/',
    method: options.method ?? 'POST',
    authType: 'AK',
    style: 'RPC',
    reqBodyType: 'formData',
    bodyType: options.bodyType ?? 'json',
  });
  const request = new OpenApiRequest(options.where === 'body' ? { body: parameters } : { query: parameters });
  return (await client.callApi(params, request, {} as Runtime)) as OfficialResponse<T>;
}

/** What `@alicloud/openapi-client` throws for an error answer (a Tea error). */
export interface OfficialError extends Error {
  code: string;
  statusCode?: number;
  data: Record<string, unknown> & { statusCode: number };
}

/** Await an official-client call that must fail; returns its error. */
export async function officialFailure(call: Promise<unknown>): Promise<OfficialError> {
  try {
    await call;
  } catch (error) {
    return error as OfficialError;
  }
  throw new Error('expected the official client call to fail');
}
