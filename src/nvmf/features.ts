// One controller's features (Get/Set Features, base spec 2.0 section 5.27.1): what the host set and
// what the controller granted. Nothing is saveable (ONCS bit 4 clear), so SEL "saved" answers the
// default. The transport reads the values it acts on: the granted queue count, the keep-alive
// timeout, the enabled asynchronous events and whether the volatile write cache is on.
import {
  FEATURE_ARBITRATION, FEATURE_ASYNC_EVENT_CONFIG, FEATURE_ERROR_RECOVERY, FEATURE_HOST_IDENTIFIER, FEATURE_INTERRUPT_COALESCING,
  FEATURE_KEEP_ALIVE_TIMER, FEATURE_NUMBER_OF_QUEUES, FEATURE_POWER_MANAGEMENT, FEATURE_TEMPERATURE_THRESHOLD,
  FEATURE_VOLATILE_WRITE_CACHE, FEATURE_WRITE_ATOMICITY, SCT_COMMAND_SPECIFIC, SCT_GENERIC, SC_COMMAND_SEQUENCE_ERROR,
  SC_FEATURE_NOT_SAVEABLE, STATUS_INVALID_FIELD, STATUS_SUCCESS, nvmeStatus,
} from './status.js';
import { asyncEventsSupported, type ControllerIdentity } from './identify.js';

/** Get Features SEL (dword 10 bits 10:8). */
export const SEL_CURRENT = 0;
export const SEL_DEFAULT = 1;
export const SEL_SAVED = 2;
export const SEL_SUPPORTED_CAPABILITIES = 3;
/** Supported capabilities bits (SEL 3 answer): changeable. Never saveable nor namespace specific. */
const CAPABILITY_CHANGEABLE = 1 << 2;

/** Async event configuration bits a host may enable: SMART critical warnings 7:0, and the notices of OAES. */
const AEC_SMART_WARNINGS = 0xff;
/** Composite temperature (TMPSEL 0) over-temperature threshold default, Kelvin: matches identify.ts WCTEMP. */
const TEMPERATURE_OVER_DEFAULT_K = 343;
/** A Keep Alive Timeout above this is refused (an hour: longer means no keep-alive worth having). */
export const KEEP_ALIVE_TIMEOUT_MS_MAX = 3_600_000;

export interface FeatureResult { status: number; dw0: number; data?: Buffer }

export interface FeatureLimits {
  /** I/O queues a controller grants at most. */
  ioQueuesMax: number;
  /** The OAES bits the controller advertises (identify.ts): only these notices can be enabled. */
  asyncEventsSupported: number;
  /** The keep-alive timeout Connect asked for (KATO), in ms; 0: none. */
  keepAliveTimeoutMs: number;
}

export class FeatureStore {
  /** I/O submission/completion queues the host asked for (1-based), or null before it asked. */
  queuesAsked: { submission: number; completion: number } | null = null;
  /** I/O queues granted (1-based, ≤ ioQueuesMax): the transport refuses a Connect for a queue id above it. */
  ioQueuesGranted: number;
  keepAliveTimeoutMs: number;
  /** Async Event Configuration dword 11 as set: the transport sends only the events enabled here. */
  asyncEventConfig = 0;
  /** Whether the host leaves the volatile write cache on; off, the transport makes every write FUA. */
  writeCacheEnabled = true;
  /** The host identifier from Connect (16 bytes), for Get Features 81h. */
  hostId: Buffer | null = null;
  private arbitration = 0;
  private powerState = 0;
  private errorRecovery = 0;
  private interruptCoalescing = 0;
  private writeAtomicity = 0;
  private temperatureOverK = TEMPERATURE_OVER_DEFAULT_K;
  private temperatureUnderK = 0;

  /** The features of a new controller of `identity`, whose Connect asked for `keepAliveTimeoutMs` (KATO). */
  static forController(identity: ControllerIdentity, keepAliveTimeoutMs: number): FeatureStore {
    return new FeatureStore({ ioQueuesMax: identity.ioQueuesMax, asyncEventsSupported: asyncEventsSupported(identity.discovery, identity.ana === true), keepAliveTimeoutMs });
  }

  constructor(private readonly limits: FeatureLimits) {
    if (!(Number.isInteger(limits.ioQueuesMax) && limits.ioQueuesMax >= 1 && limits.ioQueuesMax <= 0xffff)) {
      throw new Error(`ioQueuesMax must be 1..65535, got ${limits.ioQueuesMax}`);
    }
    this.ioQueuesGranted = limits.ioQueuesMax;
    this.keepAliveTimeoutMs = limits.keepAliveTimeoutMs;
  }

  /** Whether the host enabled an event whose Async Event Configuration bit is `bit` (e.g. 8: namespace attribute notices). */
  asyncEventEnabled(bit: number): boolean {
    return ((this.asyncEventConfig >>> bit) & 1) === 1;
  }

  get(fid: number, sel: number, dw11: number): FeatureResult {
    if (sel === SEL_SUPPORTED_CAPABILITIES) {
      return this.known(fid) ? ok(fid === FEATURE_HOST_IDENTIFIER ? 0 : CAPABILITY_CHANGEABLE) : invalid();
    }
    const current = sel === SEL_CURRENT;
    if (sel !== SEL_CURRENT && sel !== SEL_DEFAULT && sel !== SEL_SAVED) return invalid();
    switch (fid) {
      case FEATURE_ARBITRATION: return ok(current ? this.arbitration : 0);
      case FEATURE_POWER_MANAGEMENT: return ok(current ? this.powerState : 0);
      case FEATURE_TEMPERATURE_THRESHOLD: return this.getTemperature(dw11, current);
      case FEATURE_ERROR_RECOVERY: return ok(current ? this.errorRecovery : 0);
      case FEATURE_VOLATILE_WRITE_CACHE: return ok(!current || this.writeCacheEnabled ? 1 : 0);
      case FEATURE_NUMBER_OF_QUEUES: {
        const n = (current ? this.ioQueuesGranted : this.limits.ioQueuesMax) - 1;
        return ok(((n << 16) | n) >>> 0);
      }
      case FEATURE_INTERRUPT_COALESCING: return ok(current ? this.interruptCoalescing : 0);
      case FEATURE_WRITE_ATOMICITY: return ok(current ? this.writeAtomicity : 0);
      case FEATURE_ASYNC_EVENT_CONFIG: return ok(current ? this.asyncEventConfig : 0);
      case FEATURE_KEEP_ALIVE_TIMER: return ok(current ? this.keepAliveTimeoutMs : this.limits.keepAliveTimeoutMs);
      case FEATURE_HOST_IDENTIFIER: {
        // EXHID (dword 11 bit 0) must ask for the 128-bit form: NVMe over Fabrics has no other.
        if ((dw11 & 1) !== 1 || this.hostId === null) return invalid();
        return { status: STATUS_SUCCESS, dw0: 0, data: Buffer.from(this.hostId) };
      }
      default: return invalid();
    }
  }

  /** Set Features with dword 10 `save` bit (SV) and dword 11; `data` for features that carry some (none here). */
  set(fid: number, save: boolean, dw11: number): FeatureResult {
    if (save) return { status: nvmeStatus(SCT_COMMAND_SPECIFIC, SC_FEATURE_NOT_SAVEABLE, true), dw0: 0 };
    switch (fid) {
      case FEATURE_ARBITRATION: this.arbitration = dw11 >>> 0; return ok(0);
      case FEATURE_POWER_MANAGEMENT:
        // One power state (NPSS 0): only PS 0 exists.
        if ((dw11 & 0x1f) !== 0) return invalid();
        this.powerState = dw11 & 0xff;
        return ok(0);
      case FEATURE_TEMPERATURE_THRESHOLD: return this.setTemperature(dw11);
      case FEATURE_ERROR_RECOVERY:
        // DULBE (bit 16) needs deallocated-block errors, which this target does not raise.
        if ((dw11 & 0x10000) !== 0) return invalid();
        this.errorRecovery = dw11 & 0xffff;
        return ok(0);
      case FEATURE_VOLATILE_WRITE_CACHE: this.writeCacheEnabled = (dw11 & 1) === 1; return ok(0);
      case FEATURE_NUMBER_OF_QUEUES: return this.setQueues(dw11);
      case FEATURE_INTERRUPT_COALESCING: this.interruptCoalescing = dw11 & 0xffff; return ok(0);
      case FEATURE_WRITE_ATOMICITY: this.writeAtomicity = dw11 & 1; return ok(0);
      case FEATURE_ASYNC_EVENT_CONFIG:
        if ((dw11 & ~(AEC_SMART_WARNINGS | this.limits.asyncEventsSupported)) !== 0) return invalid();
        this.asyncEventConfig = dw11 >>> 0;
        return ok(0);
      case FEATURE_KEEP_ALIVE_TIMER:
        if ((dw11 >>> 0) > KEEP_ALIVE_TIMEOUT_MS_MAX) return invalid();
        this.keepAliveTimeoutMs = dw11 >>> 0;
        return ok(0);
      case FEATURE_HOST_IDENTIFIER:
        // NVMe-oF: the host identifier comes with Connect; setting it is a sequence error (base spec 5.27.1.25).
        return { status: nvmeStatus(SCT_GENERIC, SC_COMMAND_SEQUENCE_ERROR, true), dw0: 0 };
      default: return invalid();
    }
  }

  private known(fid: number): boolean {
    return [FEATURE_ARBITRATION, FEATURE_POWER_MANAGEMENT, FEATURE_TEMPERATURE_THRESHOLD, FEATURE_ERROR_RECOVERY,
      FEATURE_VOLATILE_WRITE_CACHE, FEATURE_NUMBER_OF_QUEUES, FEATURE_INTERRUPT_COALESCING, FEATURE_WRITE_ATOMICITY,
      FEATURE_ASYNC_EVENT_CONFIG, FEATURE_KEEP_ALIVE_TIMER, FEATURE_HOST_IDENTIFIER].includes(fid);
  }

  /** NSQR (bits 15:0) and NCQR (31:16), 0-based; 65535 is invalid. Granted: at most ioQueuesMax. */
  private setQueues(dw11: number): FeatureResult {
    const nsqr = dw11 & 0xffff;
    const ncqr = (dw11 >>> 16) & 0xffff;
    if (nsqr === 0xffff || ncqr === 0xffff) return invalid();
    this.queuesAsked = { submission: nsqr + 1, completion: ncqr + 1 };
    // One connection is one submission and one completion queue: grant the same number of each.
    this.ioQueuesGranted = Math.min(nsqr + 1, ncqr + 1, this.limits.ioQueuesMax);
    const n = this.ioQueuesGranted - 1;
    return ok(((n << 16) | n) >>> 0);
  }

  /** TMPTH (15:0), TMPSEL (19:16): only the composite temperature (0); THSEL (21:20): 0 over, 1 under. */
  private temperatureSelector(dw11: number): 'over' | 'under' | null {
    const tmpsel = (dw11 >>> 16) & 0xf;
    const thsel = (dw11 >>> 20) & 0x3;
    if (tmpsel !== 0 || thsel > 1) return null;
    return thsel === 0 ? 'over' : 'under';
  }

  private getTemperature(dw11: number, current: boolean): FeatureResult {
    const which = this.temperatureSelector(dw11);
    if (which === null) return invalid();
    if (which === 'over') return ok(current ? this.temperatureOverK : TEMPERATURE_OVER_DEFAULT_K);
    return ok(current ? this.temperatureUnderK : 0);
  }

  private setTemperature(dw11: number): FeatureResult {
    const which = this.temperatureSelector(dw11);
    if (which === null) return invalid();
    if (which === 'over') this.temperatureOverK = dw11 & 0xffff;
    else this.temperatureUnderK = dw11 & 0xffff;
    return ok(0);
  }
}

function ok(dw0: number): FeatureResult { return { status: STATUS_SUCCESS, dw0: dw0 >>> 0 }; }
function invalid(): FeatureResult { return { status: STATUS_INVALID_FIELD, dw0: 0 }; }
