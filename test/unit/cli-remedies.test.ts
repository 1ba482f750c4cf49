import { describe, expect, it } from 'vitest';
import { CLI_REMEDIES, cliRemedy, cliRemedyOf } from '../../src/cli/remedies.js';
import { connectFailedError } from '../../src/connector/connection-errors.js';
import { API_ERROR_CATALOG, LOCAL_ERROR_CATALOG, NetworkError, StoreError, isErrorCode } from '../../src/errors.js';

const CATALOG: ReadonlyArray<[string, { remedy: string }]> = [...Object.entries(API_ERROR_CATALOG), ...Object.entries(LOCAL_ERROR_CATALOG)];

describe('remedies: the library names its options, the CLI its flags', () => {
  it('no remedy of the error catalog names a CLI flag or command line', () => {
    for (const [code, { remedy }] of CATALOG) {
      expect(remedy, code).not.toMatch(/(^|[\s(`])--[a-z]/);
      expect(remedy, code).not.toMatch(/apsaramq-device [a-z]+( |\))/);
    }
  });

  it('the CLI words only codes of the catalog, each its own way', () => {
    for (const [code, words] of Object.entries(CLI_REMEDIES)) {
      expect(isErrorCode(code), code).toBe(true);
      expect(words).not.toBe(CATALOG.find(([c]) => c === code)?.[1].remedy);
    }
    expect(cliRemedyOf('AddressInUse')).toMatch(/--mqtt-port/);
    expect(cliRemedyOf('Throttling.User')).toBe(API_ERROR_CATALOG['Throttling.User'].remedy);
  });

  it("an error carrying the catalog's remedy gets the CLI's; one whose thrower wrote its own keeps it", () => {
    const corrupt = new StoreError('StoreCorrupt', 'Credential file x.json is not JSON', 'x.json');
    expect(corrupt.message).toContain(LOCAL_ERROR_CATALOG.StoreCorrupt.remedy);
    expect(cliRemedy(corrupt)).toMatch(/^The stored credential file is not valid: inspect it; apsaramq-device get --client-id <id> --store <dir>/);
    const own = new NetworkError('ConnectionRefused', 'Nothing answers at http://127.0.0.1:1', 'http://127.0.0.1:1', undefined, { remedy: 'Start the emulator, or fix --endpoint.' });
    expect(cliRemedy(own)).toBe('Start the emulator, or fix --endpoint.');
  });

  it("the connector's remedies written for one failure name options; the CLI says them with its flags", () => {
    const context = { clientId: 'GID_x@@@d', url: 'mqtt://127.0.0.1:9', connectTimeoutMs: 10_000 };
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    const unresolved = Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.invalid'), { code: 'ENOTFOUND' });
    const other = Object.assign(new Error('connect EHOSTUNREACH'), { code: 'EHOSTUNREACH' });
    const cases = [
      [connectFailedError('http', undefined, context), /^This port speaks HTTP: is brokerUrl the OpenAPI endpoint\? Option brokerUrl must/, /^This port speaks HTTP: did you mean --endpoint\? The broker URL \(--broker-url\) must name the MQTT port/],
      [connectFailedError('untrusted', new Error('self-signed certificate'), context), /pass option ca with the CA that signed it, or rejectUnauthorized: false for tests\.$/, /pass --ca FILE with the CA that signed it, or --insecure for tests\.$/],
      [connectFailedError('unreachable', refused, context), /Check the broker URL \(option brokerUrl\)\.$/, /Check the broker URL \(--broker-url\)\.$/],
      [connectFailedError('unreachable', unresolved, context), /check the broker URL \(option brokerUrl\) and DNS\.$/, /check the broker URL \(--broker-url\) and DNS\.$/],
      [connectFailedError('unreachable', other, context), /check the broker URL \(option brokerUrl\), the port/, /check the broker URL \(--broker-url\), the port/],
    ] as const;
    for (const [error, library, cli] of cases) {
      expect(error.remedy).toMatch(library);
      expect(error.remedy).not.toMatch(/(^|[\s(`])--[a-z]/);
      expect(cliRemedy(error)).toMatch(cli);
    }
  });
});
