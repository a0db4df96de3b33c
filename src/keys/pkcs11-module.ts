// One loaded PKCS#11 module per module path per process (PKCS#11 v2.40 §5.4: C_Initialize once per
// application), and the mapping of its failures to KekError. The binding (npm pkcs11js, a native addon)
// is imported on first use, so a machine without it reports KekUnavailable instead of failing to start.
// A call that shows the module or token broken marks the module stale: it is finalized, initialized
// again and the call tried once more, which is what SoftHSM (and a re-plugged HSM) needs to see a token
// come back. A refused PIN is never retried (a real token counts failed logins and locks).
import type * as Pkcs11js from 'pkcs11js';
import { KekError, KekUnavailable } from './errors.js';

export type Binding = typeof Pkcs11js;
export type Pkcs11Lib = Pkcs11js.PKCS11;

let bindingLoaded: Binding | null = null;

async function loadBinding(): Promise<Binding> {
  if (bindingLoaded !== null) return bindingLoaded;
  try {
    const ns = (await import('pkcs11js')) as unknown as Binding & { default?: Binding };
    // A CommonJS addon: its exports are the ES module's default.
    bindingLoaded = ns.default ?? ns;
    return bindingLoaded;
  } catch (err) {
    throw new KekUnavailable('the PKCS#11 binding (npm package pkcs11js, built from source by npm ci) cannot be loaded: ' +
      `${err instanceof Error ? err.message : String(err)}`);
  }
}

/** The name of a PKCS#11 return value (`CKR_PIN_INCORRECT`), or null when `err` is not one. */
export function ckrOf(binding: Binding, err: unknown): string | null {
  return err instanceof binding.Pkcs11Error ? err.message : null;
}

const PIN_REFUSED = new Set(['CKR_PIN_INCORRECT', 'CKR_PIN_INVALID', 'CKR_PIN_LEN_RANGE', 'CKR_PIN_EXPIRED', 'CKR_PIN_LOCKED']);

export class Pkcs11Module {
  private stale = false;

  constructor(readonly modulePath: string, readonly binding: Binding, private readonly lib: Pkcs11Lib) {}

  /**
   * Runs `fn` against the initialized module, re-initializing it first when an earlier call found it
   * broken. A call that fails in a way that marks the module stale is tried once more after a
   * re-initialization: a token removed, re-plugged or re-created since the last call is seen only after
   * C_Initialize (SoftHSM answers CKR_GENERAL_ERROR until then), and a call that only reads or wraps
   * is safe to repeat. `fn` is synchronous: the binding's calls block, so no other call of this process
   * reaches the module until `fn` returns (the per-module serialization PKCS#11 login state needs,
   * since a token's login is shared by all of an application's sessions).
   */
  run<T>(what: string, fn: (lib: Pkcs11Lib) => T): T {
    if (this.stale) this.reinitialize();
    try {
      return fn(this.lib);
    } catch (err) {
      const failure = this.failure(what, err);
      if (!this.stale) throw failure;
    }
    this.reinitialize();
    try {
      return fn(this.lib);
    } catch (err) {
      throw this.failure(what, err);
    }
  }

  /** Marks the module for re-initialization (a token not found may appear after one). */
  markStale(): void { this.stale = true; }

  /** A failure of `what` as a KekError; any failure but a refused PIN or a KekError marks the module stale. */
  private failure(what: string, err: unknown): Error {
    if (err instanceof KekError) return err;
    const ckr = ckrOf(this.binding, err);
    if (ckr !== null && PIN_REFUSED.has(ckr)) return new KekUnavailable(`${what}: the token refused the PIN (${ckr})`);
    this.stale = true;
    return new KekUnavailable(`${what}: ${ckr ?? (err instanceof Error ? err.message : String(err))} (PKCS#11 module ${this.modulePath})`);
  }

  private reinitialize(): void {
    try {
      this.lib.C_Finalize();
    } catch {
      // CKR_CRYPTOKI_NOT_INITIALIZED (an earlier re-initialization failed half-way) or the device's own
      // error: the module is finalized either way, and C_Initialize below says whether it works again.
    }
    try {
      this.lib.C_Initialize();
    } catch (err) {
      throw new KekUnavailable(`PKCS#11 module ${this.modulePath}: C_Initialize failed (${ckrOf(this.binding, err) ?? String(err)})`);
    }
    this.stale = false;
  }
}

const modules = new Map<string, Pkcs11Module>();

/** The process's instance of the module at `modulePath`, loaded and initialized on first use. */
export async function pkcs11Module(modulePath: string): Promise<Pkcs11Module> {
  const known = modules.get(modulePath);
  if (known !== undefined) return known;
  const binding = await loadBinding();
  // Another open may have loaded it while the binding was being imported.
  const raced = modules.get(modulePath);
  if (raced !== undefined) return raced;
  const lib = new binding.PKCS11();
  try {
    lib.load(modulePath);
  } catch (err) {
    throw new KekUnavailable(`PKCS#11 module ${modulePath} cannot be loaded: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    lib.C_Initialize();
  } catch (err) {
    closeQuietly(lib);
    // Not kept: the next open loads and initializes it again.
    throw new KekUnavailable(`PKCS#11 module ${modulePath}: C_Initialize failed (${ckrOf(binding, err) ?? String(err)})`);
  }
  const module = new Pkcs11Module(modulePath, binding, lib);
  modules.set(modulePath, module);
  return module;
}

function closeQuietly(lib: Pkcs11Lib): void {
  try {
    lib.close();
  } catch {
    // Unloading a module whose C_Initialize failed: the failure already reported is the one that matters.
  }
}
