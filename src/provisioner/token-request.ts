/**
 * The parameters of the OpenAPI's token actions (ApplyToken, QueryToken, RevokeToken) as this client sends them,
 * checked before any I/O: what the service would refuse is refused here, with the parameter named.
 */
import { ValidationError } from '../errors.js';
import { MAX_TOKEN_RESOURCES } from '../mqtt/service-limits.js';
import { IssuedToken, type TokenType } from './token.js';

/** What {@link OpenApiClient.applyToken} asks for. */
export interface ApplyTokenRequest {
  /** Topics the token covers (`Parent/sub`, `Parent/+`, `Parent/#`); 1 to 100, sent sorted. */
  resources: readonly string[];
  /** `R` (subscribe), `W` (publish) or `R,W` (both). */
  actions: 'R' | 'W' | 'R,W';
  /** Expiry, ms since the epoch: at least 60 s ahead; the service caps it at 30 days. */
  expireTime: number;
}

/** The token type of an ApplyToken `Actions` value: what a Token-mode password calls it. */
const TOKEN_TYPE_OF_ACTIONS: Readonly<Record<string, TokenType | undefined>> = Object.freeze({ R: 'R', W: 'W', 'R,W': 'RW' });

/** ApplyToken's resources checked (1 to 100 topics, no commas or spaces) and in the dictionary order the service wants. */
export function checkResources(resources: readonly string[]): string[] {
  if (!Array.isArray(resources) || resources.length < 1 || resources.length > MAX_TOKEN_RESOURCES) {
    throw new ValidationError('InvalidOption', `Invalid resources: expected 1 to ${MAX_TOKEN_RESOURCES} topics`);
  }
  for (const r of resources) {
    if (typeof r !== 'string' || r === '' || r.includes(',') || /\s/.test(r)) {
      throw new ValidationError('InvalidOption', `Invalid resource ${JSON.stringify(r)}: expected a topic such as Parent/sub, Parent/+ or Parent/# (no commas or spaces)`);
    }
  }
  // The service wants several resources in dictionary order.
  return [...new Set(resources)].sort();
}

/** The token string of a token or an IssuedToken. @throws ValidationError `InvalidOption` */
export function tokenString(token: string | IssuedToken): string {
  const value = token instanceof IssuedToken ? token.token : token;
  if (typeof value !== 'string' || value === '') throw new ValidationError('InvalidOption', 'Invalid token: expected the token string from ApplyToken');
  return value;
}

/**
 * ApplyToken's request checked: its resources (sorted, as the service wants them) and the token type its actions
 * give. @throws ValidationError `InvalidOption` for an empty or oversized resource list, bad actions or an
 * expireTime that is not a future integer.
 */
export function checkApplyToken(request: ApplyTokenRequest): { resources: string[]; type: TokenType } {
  const resources = checkResources(request.resources);
  const type = TOKEN_TYPE_OF_ACTIONS[request.actions];
  if (type === undefined) throw new ValidationError('InvalidOption', `Invalid actions ${JSON.stringify(request.actions)}: expected 'R', 'W' or 'R,W'`);
  if (!Number.isSafeInteger(request.expireTime) || request.expireTime <= Date.now()) {
    throw new ValidationError('InvalidOption', `Invalid expireTime ${String(request.expireTime)}: expected a future time in ms since the epoch (at least 60 s ahead)`);
  }
  return { resources, type };
}
