import type { DeviceCredential } from '../credential.js';
import { provisionFleet } from '../provisioner/fleet.js';
import type { ProvisionerOptions, ProvisionStrategy } from '../provisioner/provisioner.js';

/** What the simulator needs from provisioning. */
export interface DeviceProvisioning {
  credentials: Map<string, DeviceCredential>;
  failed: Array<{ clientId: string; code: string }>;
}

/** How to provision the simulated fleet. */
export interface ProvisionDevicesOptions {
  provisioner: ProvisionerOptions;
  qps: number;
  concurrency: number;
  strategy: ProvisionStrategy;
  signal?: AbortSignal;
  onProgress?: (provisioned: number) => void;
}

/**
 * Give every simulated device its credential, through the fleet provisioner (store first, rate-limited, retried).
 * The one place the simulator provisions, so the policy can change without touching the run.
 */
export async function provisionDevices(clientIds: readonly string[], options: ProvisionDevicesOptions): Promise<DeviceProvisioning> {
  const result = await provisionFleet(clientIds, {
    ...options.provisioner,
    qps: options.qps,
    concurrency: options.concurrency,
    strategy: options.strategy,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.onProgress === undefined ? {} : { onProgress: (p) => options.onProgress?.(p.provisioned) }),
  });
  return { credentials: result.credentials, failed: result.failed };
}
