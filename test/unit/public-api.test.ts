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
      'BackoffOptions', 'CONNACK_CODES', 'CONNECT_DEFAULTS', 'ConfigurationError', 'ConnectDeviceOptions', 'ConnectError', 'ConnectGate',
      'ConnectErrorCode', 'ConnectionClosedError', 'ConnectionMode', 'ConnectionOutboxStats', 'ConnectionState', 'CredentialRequest', 'CredentialSource', 'DeviceConnection',
      'DeviceConnectionEvents', 'DeviceCredential', 'DeviceCredentialWire', 'DurableOutboxStats', 'EnqueueOptions', 'ErrorCode', 'ErrorInfo', 'InvalidParameterCode',
      'KnownApiErrorCode', 'LOCAL_ERROR_CATALOG', 'LocalErrorCode', 'Logger', 'MAX_CLIENT_ID_LENGTH', 'MqttCredentials',
      'NetworkError', 'NetworkErrorCode', 'OutboxDropReason', 'OutboxError', 'OutboxErrorCode', 'OutboxReport', 'PublishAccepted',
      'PublishError', 'PublishOptions', 'PublishProperties', 'Publishing', 'RetryClass', 'StoreError',
      'StoreErrorCode', 'SubscribeError', 'SubscribeOptions',
      'SystemError', 'SystemErrorCode', 'TOKEN_DEFAULTS', 'TakeoverOptions', 'TokenConnectOptions', 'TokenGrant', 'TokenOptions',
      'TokenRequest', 'TokenSource', 'Transport', 'VERSION', 'ValidationError',
      'ValidationErrorCode', 'apiErrorInfo', 'assertClientId', 'assertInstanceId', 'brokerUrlFor', 'clientIdProblem',
      'connectDevice', 'enqueueDurable', 'hmacPassword', 'isApsaraMqDeviceError', 'isErrorCode', 'signDeviceCredential', 'signSignature',
      'signToken', 'staticSource',
    ],
  },
  'apsaramq-device/provisioner': {
    file: 'src/registrar.ts',
    names: [
      'API_VERSION', 'AccountCredentials', 'AccountKeyOptions', 'ApiCallStats', 'ApiParams', 'ApiResponse',
      'ApplyTokenRequest', 'CallOptions', 'ClientIdPage', 'CredentialLock', 'CredentialOrigin', 'CredentialResponse',
      'CredentialStore', 'DEFAULT_API_CONCURRENCY', 'DEFAULT_API_QPS', 'DEFAULT_LOCK_STALE_MS',
      'DEFAULT_MAX_SERVICE_LATENCY_MS', 'DEFAULT_PAGE_SIZE', 'DEFAULT_RETRY_OPTIONS', 'DEFAULT_TIMEOUT_MS',
      'ENV_ACCESS_KEY_ID', 'ENV_ACCESS_KEY_SECRET', 'ENV_SECURITY_TOKEN', 'ENV_STORE_DIR', 'FileCredentialStore',
      'FileCredentialStoreOptions', 'FleetFailure', 'FleetOptions', 'FleetProgress', 'FleetResult',
      'IDEMPOTENT_ACTIONS', 'IssuedToken', 'LimiterOptions', 'ListClientIdsOptions', 'MAX_BATCH_SESSION_QUERY',
      'MAX_CREDENTIAL_FILE_BYTES', 'MAX_TOKEN_RESOURCES', 'MemoryCredentialStore', 'ObtainOptions',
      'ObtainedCredential', 'OpenApiClient', 'OpenApiClientOptions', 'OpenApiSignature', 'PendingRegister',
      'ProvisionStrategy', 'Provisioner', 'ProvisionerOptions', 'RateLimitOptions', 'RateLimiter',
      'RegisterAndConnectOptions', 'RegistrationJournal', 'RetryOptions', 'SessionStatus', 'TokenSourceGrant',
      'TokenSourceOptions', 'TokenType',
      'WaitForSessionOptions', 'defaultStoreDir', 'percentEncode', 'provisionFleet', 'registerAndConnect', 'signRpc',
      'stringToSign',
    ],
  },
  'apsaramq-device/emulator': {
    file: 'src/emulator/index.ts',
    names: [
      'ActionStats', 'BROKER_DEFAULTS', 'BrokerOptions', 'ClusterProcess', 'DEFAULT_GROUPS', 'DEFAULT_PARENT_TOPICS', 'EMULATED_ACTIONS', 'EMULATOR_DEFAULTS',
      'EMULATOR_ENV', 'EmulatedAction', 'Emulator', 'EmulatorClusterInfo', 'EmulatorOptions', 'EmulatorStateError', 'EmulatorStateErrorCode',
      'EmulatorStats', 'ErrorStatusMode', 'MAX_FAIL_NEXT_COUNT', 'OfflineTimers', 'RULES', 'ReRegisterPolicy', 'RuleName', 'TlsOptions',
      'UnsupportedFeaturePolicy', 'ValueSource', 'startEmulator',
    ],
  },
  'apsaramq-device/simulator': {
    file: 'src/simulator/index.ts',
    names: [
      'BrokerLoss', 'DeliveryReport', 'DeviceTarget', 'FAULT_KINDS', 'FaultKind', 'FaultReport', 'FaultSpec', 'InvalidReportError',
      'InvalidScenarioError', 'LatencySummary', 'MergeReportsOptions', 'MessageCounts', 'NotHealedDevice', 'REPORT_FORMAT', 'REPORT_LIMITS',
      'ReportSeries', 'RunParameters', 'SIMULATION_DEFAULTS', 'Scenario', 'ScenarioIdentity', 'ShardRecord', 'SimulatedClient',
      'SimulationOptions', 'SimulationProgress', 'SimulationReport', 'SimulationSettings', 'SimulationTarget', 'SimulatorError',
      'SimulatorErrorCode', 'Threshold', 'checkThresholds', 'emulatorTarget', 'formatReport', 'mergeReports', 'parseReport',
      'parseScenario', 'parseThresholds', 'readScenarioFile', 'renderReportHtml', 'runSimulation', 'simulationFailure',
    ],
  },
  'apsaramq-device/testing': {
    file: 'src/testing/index.ts',
    names: [
      'DEFAULT_WAIT_MS', 'EmulatorProcess', 'EmulatorProcessOptions', 'ObservedMessage', 'RegisteredDevice', 'TestEmulator',
      'TestEmulatorOptions', 'TestingError', 'TestingErrorCode', 'WaitOptions', 'startEmulatorProcess', 'startTestEmulator', 'testLogger',
    ],
  },
  'apsaramq-device/outbox': {
    file: 'src/outbox/index.ts',
    names: [
      'MIN_OUTBOX_BYTES', 'OUTBOX_DEFAULTS', 'OutboxDrop', 'OutboxDropReason', 'OutboxError', 'OutboxErrorCode', 'OutboxMessage',
      'OutboxMessageInput', 'OutboxRecovery', 'OutboxStats', 'OutboxStore', 'OutboxStoreEvents', 'OutboxStoreOptions', 'WhenFull',
      'openOutboxStore', 'repairOutboxStore',
    ],
  },
  'apsaramq-device/gateway': {
    file: 'src/gateway/index.ts',
    names: [
      'ConnectGate', 'ConnectOutcome', 'ConnectPacer', 'ConnectPacerOptions', 'DEFAULT_CONNECT_RATE', 'GATEWAY_BACKOFF', 'GATEWAY_METRIC_NAMES', 'Gateway',
      'GatewayCounts', 'GatewayCredentials', 'GatewayDeviceInfo', 'GatewayDeviceState', 'GatewayEvents', 'GatewayMessage', 'GatewayMetrics',
      'GatewayMetricsOptions', 'GatewayOptions', 'GatewayRegistrar', 'MetricsRegistry', 'StoreCredentialsOptions', 'storeCredentials',
    ],
  },
  'apsaramq-device/testing/vitest': { file: 'src/testing/vitest.ts', names: ['UseEmulatorOptions', 'useEmulator'] },
  'apsaramq-device/testing/jest': { file: 'src/testing/jest.ts', names: ['UseEmulatorOptions', 'useEmulator'] },
  'apsaramq-device/testing/node-test': { file: 'src/testing/node-test.ts', names: ['UseEmulatorOptions', 'useEmulator'] },
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
      const subpath = entry === 'apsaramq-device' ? '.' : `.${entry.slice('apsaramq-device'.length)}`;
      const target = pkg.exports[subpath];
      expect(typeof target === 'object' ? target.default : target, entry).toBe(`./${file.replace(/^src\//, 'dist/').replace(/\.ts$/, '.js')}`);
    }
  });
});
