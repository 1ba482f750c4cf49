import { ValidationError } from '../errors.js';

/** The default endpoint of a region. */
export function regionEndpoint(region: string): string {
  return `https://onsmqtt.${region}.aliyuncs.com`;
}

/**
 * The endpoint to call: `options.endpoint` checked and normalised (no trailing `/`), else the region's endpoint.
 * @throws ValidationError `InvalidOption` naming `endpoint` or `region`.
 */
export function resolveEndpoint(options: { endpoint?: string | undefined; region?: string | undefined }): string {
  const { endpoint, region } = options;
  if (endpoint === undefined || endpoint === '') {
    if (region === undefined || region === '') {
      throw new ValidationError('InvalidOption', 'Pass either endpoint (the OpenAPI URL) or region (such as cn-hangzhou)');
    }
    if (!/^[a-z0-9][a-z0-9-]*$/.test(region)) {
      throw new ValidationError('InvalidOption', `Invalid region ${JSON.stringify(region)}: expected a region id such as cn-hangzhou`);
    }
    return regionEndpoint(region);
  }
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ValidationError('InvalidOption', `Invalid endpoint ${JSON.stringify(endpoint)}: expected an http(s) URL such as https://onsmqtt.cn-hangzhou.aliyuncs.com`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ValidationError('InvalidOption', `Invalid endpoint: the scheme must be http or https, not ${url.protocol.replace(/:$/, '')}`);
  }
  // The endpoint appears in every error message; a URL carrying a password would leak it.
  if (url.username || url.password) throw new ValidationError('InvalidOption', 'Invalid endpoint: it must not contain a user name or password');
  if (url.search || url.hash) throw new ValidationError('InvalidOption', 'Invalid endpoint: it must not have a query or fragment');
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
}

