import { createRequire } from 'node:module';
import { ConfigurationError } from '../errors.js';

/** The version ranges package.json gives the optional peers (aedes is pinned exactly: `npm install aedes` alone would not fit). */
function peerSpec(name: string): string {
  try {
    const pkg = createRequire(import.meta.url)('../../package.json') as { peerDependencies?: Record<string, string> };
    const range = pkg.peerDependencies?.[name];
    return range === undefined ? name : `${name}@${range}`;
  } catch {
    return name;
  }
}

/** The optional peer dependencies each role needs (package.json `peerDependenciesMeta`). */
const PEERS = {
  provisioner: ['@alicloud/pop-core', 'proper-lockfile'],
  emulator: ['aedes', 'ws', 'proper-lockfile'],
  simulator: ['@alicloud/pop-core', 'proper-lockfile', 'hdr-histogram-js'],
  reports: ['hdr-histogram-js'],
} as const;

type Role = keyof typeof PEERS;

/**
 * Import a role's modules only when a command needs them, so that `--help`, `sign` and `connect --credential-file`
 * work on a device where only the device's dependencies are installed; a missing peer becomes one line that says what
 * to install instead of Node's stack trace.
 */
async function loadRole<T>(role: Role, load: () => Promise<T>, what: string): Promise<T> {
  try {
    return await load();
  } catch (error) {
    const missing = missingPackage(error);
    if (missing !== undefined) {
      const all = PEERS[role].map(peerSpec).join(' ');
      const remedy = `Install it next to apsaramq-device: npm install ${all}`;
      throw new ConfigurationError('MissingDependency', `${what} needs the package ${missing}, which is not installed (an optional peer dependency of apsaramq-device). ${remedy}`, remedy);
    }
    throw error;
  }
}

/** The package a failed import could not find, when it is one of our optional peers. */
function missingPackage(error: unknown): string | undefined {
  const e = error as { code?: unknown; message?: unknown };
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || typeof e.message !== 'string') return undefined;
  const named = /Cannot find package '([^']+)'/.exec(e.message)?.[1];
  const peers: readonly string[] = Object.values(PEERS).flat();
  return named !== undefined && peers.includes(named) ? named : undefined;
}

export const loadProvisioner = (what: string) => loadRole('provisioner', () => import('../provisioner/provisioner.js'), what);
export const loadFleet = (what: string) => loadRole('provisioner', () => import('../provisioner/fleet.js'), what);
export const loadEmulator = (what: string) => loadRole('emulator', () => import('../emulator/index.js'), what);
export const loadSimulator = (what: string) => loadRole('simulator', () => import('../simulator/run.js'), what);
export const loadReports = (what: string) => loadRole('reports', () => import('../simulator/report-files.js'), what);
export const loadThresholds = (what: string) => loadRole('reports', () => import('../simulator/fail-on.js'), what);
