// The CSI Identity service: who we are, what we offer, and whether we are ready.
import { driverName, vendorVersion } from './constants.js';

export type CsiMode = 'controller' | 'node' | 'all';

export class IdentityService {
  constructor(private readonly mode: CsiMode, private readonly name: string = driverName,
    private readonly ready: () => Promise<boolean> = async () => true) {}

  async GetPluginInfo(): Promise<unknown> {
    return { name: this.name, vendor_version: vendorVersion, manifest: { mode: this.mode } };
  }

  async GetPluginCapabilities(): Promise<unknown> {
    const capabilities: unknown[] = [];
    if (this.mode !== 'node') {
      capabilities.push({ service: { type: 'CONTROLLER_SERVICE' } });
      // Group snapshots: Cairn snapshots several volumes at one instant (POST /v1/snapshots).
      capabilities.push({ service: { type: 'GROUP_CONTROLLER_SERVICE' } });
      // Growing a Cairn volume is a catalog update; the node then grows the filesystem in place.
      capabilities.push({ volume_expansion: { type: 'ONLINE' } });
    } else {
      capabilities.push({ volume_expansion: { type: 'ONLINE' } });
    }
    return { capabilities };
  }

  /** CSI spec, Probe: a healthy plugin answers; readiness false while it cannot serve yet. */
  async Probe(): Promise<unknown> {
    return { ready: { value: await this.ready() } };
  }
}
