import { resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The public names of each entry point of the package, values and types alike. A name added to or removed from an
 * entry must be added or removed here too: every public name is a decision (and a removal is a breaking change).
 */
const PUBLIC_NAMES: Record<string, { file: string; names: string[] }> = {
  'apsaramq-device': {
    file: 'src/index.ts',
    names: [
      'API_ERROR_CATALOG', 'AbortedError', 'ApiError', 'ApiErrorCode', 'ApiErrorInfo', 'ApsaraMqDeviceError', 'AuthMode',
      'BackoffOptions', 'CONNACK_CODES', 'CONNECT_DEFAULTS', 'ConfigurationError', 'ConnectDeviceOptions', 'ConnectError',
      'ConnectErrorCode', 'ConnectionClosedError', 'ConnectionState', 'CredentialRequest', 'CredentialSource', 'DeviceConnection',
      'DeviceConnectionEvents', 'DeviceCredential', 'DeviceCredentialWire', 'ErrorCode', 'ErrorInfo', 'InvalidParameterCode',
      'KnownApiErrorCode', 'LOCAL_ERROR_CATALOG', 'LocalErrorCode', 'Logger', 'MAX_CLIENT_ID_LENGTH', 'MqttCredentials',
      'NetworkError', 'NetworkErrorCode', 'PublishError', 'PublishOptions', 'PublishProperties', 'RetryClass', 'StoreError',
      'StoreErrorCode', 'SubscribeError', 'SubscribeOptions',
      'SystemError', 'SystemErrorCode', 'TakeoverOptions', 'TokenGrant', 'Transport', 'VERSION', 'ValidationError',
      'ValidationErrorCode', 'apiErrorInfo', 'assertClientId', 'assertInstanceId', 'brokerUrlFor', 'clientIdProblem',
      'connectDevice', 'hmacPassword', 'isApsaraMqDeviceError', 'isErrorCode', 'signDeviceCredential', 'signSignature',
      'signToken', 'staticSource',
    ],
  },
  'apsaramq-device/provisioner': {
    file: 'src/provisioner/index.ts',
    names: [
      'API_VERSION', 'AccountCredentials', 'AccountKeyOptions', 'ApiCallStats', 'ApiParams', 'ApiResponse', 'CallOptions',
      'ClientIdPage', 'CredentialOrigin', 'CredentialResponse', 'CredentialStore', 'DEFAULT_API_CONCURRENCY',
      'DEFAULT_API_QPS', 'DEFAULT_PAGE_SIZE', 'DEFAULT_RETRY_OPTIONS', 'DEFAULT_TIMEOUT_MS', 'ENV_ACCESS_KEY_ID',
      'ENV_ACCESS_KEY_SECRET', 'ENV_SECURITY_TOKEN', 'ENV_STORE_DIR', 'FileCredentialStore', 'FleetFailure', 'FleetOptions',
      'FleetProgress', 'FleetResult', 'IDEMPOTENT_ACTIONS', 'ListClientIdsOptions', 'MemoryCredentialStore', 'ObtainOptions',
      'ObtainedCredential', 'OpenApiClient', 'OpenApiClientOptions', 'ProvisionStrategy', 'Provisioner', 'ProvisionerOptions',
      'RateLimitOptions', 'RegisterAndConnectOptions', 'RegistrationJournal', 'RetryOptions', 'defaultStoreDir',
      'percentEncode', 'provisionFleet', 'registerAndConnect', 'signRpc', 'stringToSign',
    ],
  },
  'apsaramq-device/emulator': {
    file: 'src/emulator/public.ts',
    names: [
      'ActionStats', 'EMULATOR_DEFAULTS', 'EMULATOR_ENV', 'Emulator', 'EmulatorOptions', 'EmulatorStats', 'ErrorStatusMode',
      'ReRegisterPolicy', 'TlsOptions', 'startEmulator',
    ],
  },
  'apsaramq-device/simulator': {
    file: 'src/simulator/index.ts',
    names: [
      'LatencySummary', 'SIMULATION_DEFAULTS', 'SimulationOptions', 'SimulationProgress', 'SimulationReport',
      'SimulationSettings', 'SimulationTarget', 'SimulatorError', 'SimulatorErrorCode', 'emulatorTarget', 'formatReport',
      'runSimulation',
    ],
  },
};

const root = resolve(import.meta.dirname, '../..');
const files = Object.values(PUBLIC_NAMES).map((entry) => resolve(root, entry.file));
const program = ts.createProgram(files, {
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2022,
  strict: true,
  skipLibCheck: true,
  noEmit: true,
});
const checker = program.getTypeChecker();

describe('public API', () => {
  it.each(Object.entries(PUBLIC_NAMES))('%s exports exactly the names listed here', (_entry, { file, names }) => {
    const source = program.getSourceFile(resolve(root, file));
    const symbol = source && checker.getSymbolAtLocation(source);
    expect(symbol, file).toBeDefined();
    const exported = checker.getExportsOfModule(symbol as ts.Symbol).map((s) => s.getName()).sort();
    expect(exported).toEqual([...names].sort());
  });

  it('maps each entry point to its module in package.json', async () => {
    const pkg = (await import('../../package.json', { with: { type: 'json' } })).default as { exports: Record<string, { default?: string } | string> };
    for (const [entry, { file }] of Object.entries(PUBLIC_NAMES)) {
      const subpath = entry === 'apsaramq-device' ? '.' : `./${entry.split('/')[1]}`;
      const target = pkg.exports[subpath];
      expect(typeof target === 'object' ? target.default : target, entry).toBe(`./${file.replace(/^src\//, 'dist/').replace(/\.ts$/, '.js')}`);
    }
  });
});
