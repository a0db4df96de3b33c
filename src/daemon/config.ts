// The daemon's configuration: defaults < config file (YAML or JSON) < CAIRN_* environment < flags,
// merged and validated once at start-up into one typed object that is passed down (style.md §14).
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parseSize } from '../cli/sizes.js';
import type { Preallocation } from '../engine/index.js';

export interface ListenAddress { host: string; port: number }

/** What NVMe/TCP hosts are told to connect to (discovery log page): a host, and a port unless the listen one. */
export interface AdvertisedAddress { host: string; port: number | null }

/** NVMe-oF base NQN unless configured (src/nvmf/host-access.ts has the same value). */
export const NVMF_NQN_BASE_DEFAULT = 'nqn.2026-12.io.cairn';
/** The discovery service's port when only --nvmf is given. */
export const NVMF_DISCOVERY_PORT_DEFAULT = 8009;
/** The cluster's replication port unless --repl-port says otherwise. */
export const REPL_PORT_DEFAULT = 10811;
/** Replicas a volume may have (src/cluster/records.ts REPLICAS_MAX has the same value). */
const CLUSTER_REPLICAS_MAX = 3;
/** A node name: what etcd keys and the CLI show; short, and safe in a key and a URL. */
const NODE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/i;

export interface NbdTlsConfig {
  certFile?: string; keyFile?: string; caFile?: string; pskFile?: string; required?: boolean;
  /** TLS-PSK with the pool's tenant NBD keys (`cairn tenant nbd-key create`); needs no file. */
  tenantKeys?: boolean;
}

/** HTTPS for the API: PEM certificate and key; a client CA makes client certificates required (mutual TLS). */
export interface ApiTlsConfig { certFile: string; keyFile: string; clientCaFile?: string }

export interface DaemonConfig {
  poolPath: string;
  /** Where job records (POOL.jobs.json) and import spool files live, and an old POOL.streams.json
   *  is looked for (to migrate it); null = the pool's directory (set it for a raw block device). */
  stateDir: string | null;
  /** Size of a pool created because it was missing. */
  poolSizeBytes: number;
  /** How a pool file created because it was missing is laid down: sparse ('off') or written end to end ('full'). */
  poolPreallocate: Preallocation;
  api: ListenAddress;
  /** null: plain HTTP. */
  apiTls: ApiTlsConfig | null;
  /** null: no TCP NBD listener. */
  nbd: ListenAddress | null;
  nbdSocketPath: string | null;
  /** NBD TLS (NBD_OPT_STARTTLS): X.509 files, a PSK file and/or the tenants' PSK keys; null = TLS off. */
  nbdTls: NbdTlsConfig | null;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  /** 'json' or 'pretty'; 'auto' picks pretty on a terminal. */
  logFormat: 'json' | 'pretty' | 'auto';
  cacheBytesMax: number | null;
  commitIntervalMs: number | null;
  /** NBD busy-poll window after each request, µs (0 = off); null = the server's default. */
  nbdBusyPollMicros: number | null;
  /** How often tenants whose key-encryption key is unavailable are retried, ms; null = the default (5 s). */
  kekRetryMs: number | null;
  /** How often the pool's capacity is sampled for GET /v1/pool/history, ms; null = the default (a minute). */
  capacitySampleMs: number | null;
  /** NVMe/TCP I/O listener (usually port 4420); null = NVMe/TCP off (the default). */
  nvmf: ListenAddress | null;
  /** NVMe/TCP discovery listener; 'auto' = the --nvmf host, port 8009; null = none ("off"). */
  nvmfDiscovery: ListenAddress | 'auto' | null;
  /** The address the discovery log page gives hosts; null = the --nvmf listen address. */
  nvmfAdvertise: AdvertisedAddress | null;
  /** Subsystem NQNs are `${nvmfNqnBase}:${tenant}`. */
  nvmfNqnBase: string;
  /** In-capsule data bytes on I/O queues; null = the target's default (8 KiB). */
  nvmfInCapsuleBytes: number | null;
  /** Open a pool whose newest generation was lost at its newest valid older one (PoolOptions.rewind); only from the command line. */
  rewind: boolean;
  /** etcd endpoints (URLs) of the cluster this node joins (issue 22); null = a single node, no cluster. */
  cluster: string[] | null;
  /** This node's name in the cluster (required with `cluster`). */
  node: string | null;
  /** The host other nodes and clients reach this node by (required with `cluster`). */
  advertise: string | null;
  /** Failure domain label: replicas of one volume go to distinct zones when there are enough. */
  zone: string | null;
  /** The replication port (other nodes connect to ADVERTISE:replPort). */
  replPort: number;
  /** Replicas of a volume created without a count; null = the cluster's default (1). */
  replicasDefault: number | null;
  /** A file holding the secret every node shares: replication connections prove it (HMAC); null = none. */
  clusterSecretFile: string | null;
}

/** The configuration of a cluster node: checkClusterConfig made sure these are set together. */
export type ClusterConfig = DaemonConfig & { cluster: string[]; node: string; advertise: string };

/** The raw, unvalidated layer a source contributes (all strings or plain values). */
export type ConfigLayer = Partial<Record<keyof DaemonConfig | 'pool' | 'poolSize', unknown>>;

export const defaultConfig: DaemonConfig = {
  poolPath: './data/cairn.pool',
  stateDir: null,
  poolSizeBytes: 64 * 2 ** 30,
  poolPreallocate: 'off',
  api: { host: '127.0.0.1', port: 10880 },
  apiTls: null,
  nbd: { host: '127.0.0.1', port: 10809 },
  nbdSocketPath: null,
  nbdTls: null,
  logLevel: 'info',
  logFormat: 'auto',
  cacheBytesMax: null,
  commitIntervalMs: null,
  nbdBusyPollMicros: null,
  kekRetryMs: null,
  capacitySampleMs: null,
  nvmf: null,
  nvmfDiscovery: 'auto',
  nvmfAdvertise: null,
  nvmfNqnBase: NVMF_NQN_BASE_DEFAULT,
  nvmfInCapsuleBytes: null,
  rewind: false,
  cluster: null,
  node: null,
  advertise: null,
  zone: null,
  replPort: REPL_PORT_DEFAULT,
  replicasDefault: null,
  clusterSecretFile: null,
};

export class ConfigError extends Error {
  constructor(message: string) { super(message); this.name = 'ConfigError'; }
}

/** "HOST:PORT", ":PORT", "PORT", "[v6]:PORT" or "http://HOST:PORT"; "off" disables (null). */
export function parseListen(text: string, what: string): ListenAddress | null {
  const t = text.trim().replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
  if (t === 'off' || t === 'none' || t === '') return null;
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:?(\d+)$/.exec(t.includes(':') ? t : `:${t}`);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`invalid ${what} address ${JSON.stringify(text)} (expected HOST:PORT)`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** "HOST" or "HOST:PORT" ("[v6]" or "[v6]:PORT" for IPv6). */
export function parseAdvertise(text: string, what: string): AdvertisedAddress | null {
  const t = text.trim();
  if (t === '' || t === 'off' || t === 'none') return null;
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]+))(?::(\d+))?$/.exec(t);
  const port = m?.[3] === undefined ? null : Number(m[3]);
  if (m === null || (port !== null && (port < 1 || port > 65535))) throw new ConfigError(`invalid ${what} ${JSON.stringify(text)} (expected HOST or HOST:PORT)`);
  return { host: m[1] ?? m[2]!, port };
}

/** An NQN base: "nqn.yyyy-mm.reverse.domain[:...]" (NVMe base spec 4.5), short enough for ":" and a tenant name. */
function nqnBaseOf(value: unknown, what: string): string {
  const base = String(value).trim();
  if (!/^nqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*[a-z0-9](:[\x21-\x7e]+)?$/i.test(base) || Buffer.byteLength(base) > 223 - 33) {
    throw new ConfigError(`invalid ${what}: ${JSON.stringify(base)} (expected nqn.yyyy-mm.reverse.domain, at most 190 bytes)`);
  }
  return base;
}

function sizeOf(value: unknown, what: string): number {
  const bytes = typeof value === 'number' ? value : parseSize(String(value));
  if (bytes === null || !Number.isSafeInteger(bytes) || bytes <= 0) throw new ConfigError(`invalid ${what}: ${String(value)}`);
  return bytes;
}

function intOf(value: unknown, what: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new ConfigError(`invalid ${what}: ${String(value)}`);
  return n;
}

function listenOf(value: unknown, what: string): ListenAddress | null {
  if (value === null || value === false) return null;
  if (typeof value === 'object') {
    const o = value as { host?: unknown; port?: unknown };
    return parseListen(`${String(o.host ?? '127.0.0.1')}:${String(o.port ?? '')}`, what);
  }
  return parseListen(String(value), what);
}

const flagOf = (v: unknown): boolean => v === true || v === 'true' || v === '1';

/** `nbdTls`: an object of the NbdTlsConfig fields, or "psk" (short for {tenantKeys: true}); null/false = off. */
function tlsOf(value: unknown, what: string, current: NbdTlsConfig | null): NbdTlsConfig | null {
  if (value === null || value === false || value === 'off') return null;
  if (value === 'psk') value = { tenantKeys: true };
  if (typeof value !== 'object') throw new ConfigError(`invalid ${what}: expected "psk" or {certFile, keyFile, caFile, pskFile, tenantKeys, required}`);
  const out: NbdTlsConfig = { ...(current ?? {}) };
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (v === undefined) continue;
    if (k === 'required' || k === 'tenantKeys') out[k] = flagOf(v);
    else if (k === 'certFile' || k === 'keyFile' || k === 'caFile' || k === 'pskFile') out[k] = String(v);
    else throw new ConfigError(`unknown setting "nbdTls.${k}" in ${what}`);
  }
  if ((out.certFile === undefined) !== (out.keyFile === undefined)) throw new ConfigError(`${what}: certFile and keyFile go together`);
  if (out.certFile === undefined && out.pskFile === undefined && out.tenantKeys !== true) {
    // Nothing asked of TLS (say CAIRN_NBD_TLS_REQUIRED=0 alone): it stays off.
    if (out.required !== true && out.caFile === undefined) return null;
    throw new ConfigError(`${what}: TLS needs a way to authenticate: tenant PSK keys (--nbd-tls psk), certFile+keyFile (--nbd-tls-cert/--nbd-tls-key) or pskFile (--nbd-tls-psk)`);
  }
  return out;
}

function apiTlsOf(value: unknown, what: string, current: ApiTlsConfig | null): ApiTlsConfig | null {
  if (value === null || value === false) return null;
  if (typeof value !== 'object') throw new ConfigError(`invalid ${what}: expected {certFile, keyFile, clientCaFile}`);
  const out: Partial<ApiTlsConfig> = { ...(current ?? {}) };
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (v === undefined) continue;
    if (k === 'certFile' || k === 'keyFile' || k === 'clientCaFile') out[k] = String(v);
    else throw new ConfigError(`unknown setting "apiTls.${k}" in ${what}`);
  }
  if (out.certFile === undefined || out.keyFile === undefined) throw new ConfigError(`${what}: give certFile and keyFile (and optionally clientCaFile)`);
  return out as ApiTlsConfig;
}

/** The nbdTls layer of flags or environment values: undefined when none of them is set. */
export function tlsLayer(v: { mode?: string; certFile?: string; keyFile?: string; caFile?: string; pskFile?: string; required?: string | boolean }): unknown {
  if (Object.values(v).every((x) => x === undefined || x === false)) return undefined;
  if (v.mode === 'off') return false;
  if (v.mode !== undefined && v.mode !== 'psk') throw new ConfigError(`invalid NBD TLS mode ${JSON.stringify(v.mode)} (psk or off)`);
  return { tenantKeys: v.mode === 'psk' ? true : undefined, certFile: v.certFile, keyFile: v.keyFile, caFile: v.caFile, pskFile: v.pskFile, required: v.required };
}

/** Applies one layer on top of `config`, validating each value it sets. */
export function applyLayer(config: DaemonConfig, layer: ConfigLayer, source: string): DaemonConfig {
  const out = { ...config };
  const known = new Set(['pool', 'poolPath', 'stateDir', 'poolSize', 'poolSizeBytes', 'poolPreallocate', 'api', 'apiTls', 'nbd', 'nbdSocketPath', 'nbdTls',
    'logLevel', 'logFormat', 'cacheBytesMax', 'commitIntervalMs', 'nbdBusyPollMicros', 'kekRetryMs', 'capacitySampleMs', 'rewind',
    'nvmf', 'nvmfDiscovery', 'nvmfAdvertise', 'nvmfNqnBase', 'nvmfInCapsuleBytes',
    'cluster', 'node', 'advertise', 'zone', 'replPort', 'replicasDefault', 'clusterSecretFile']);
  for (const [key, value] of Object.entries(layer)) {
    if (value === undefined) continue;
    if (!known.has(key)) throw new ConfigError(`unknown setting "${key}" in ${source}`);
    const what = `${key} (${source})`;
    switch (key) {
      case 'pool': case 'poolPath': out.poolPath = String(value); break;
      case 'stateDir': out.stateDir = value === null || value === '' ? null : String(value); break;
      case 'poolSize': case 'poolSizeBytes': out.poolSizeBytes = sizeOf(value, what); break;
      case 'poolPreallocate': {
        const mode = String(value);
        if (mode !== 'off' && mode !== 'full') throw new ConfigError(`invalid ${what}: ${mode} (off or full)`);
        out.poolPreallocate = mode;
        break;
      }
      case 'api': {
        const api = listenOf(value, what);
        if (api === null) throw new ConfigError(`the API cannot be off (${source})`);
        out.api = api;
        break;
      }
      case 'apiTls': out.apiTls = apiTlsOf(value, what, out.apiTls); break;
      case 'nbd': out.nbd = listenOf(value, what); break;
      case 'nbdSocketPath': out.nbdSocketPath = value === null || value === '' ? null : String(value); break;
      case 'nbdTls': out.nbdTls = tlsOf(value, what, out.nbdTls); break;
      case 'logLevel': {
        const level = String(value);
        if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal'].includes(level)) throw new ConfigError(`invalid ${what}: ${level}`);
        out.logLevel = level as DaemonConfig['logLevel'];
        break;
      }
      case 'logFormat': {
        const format = String(value);
        if (!['json', 'pretty', 'auto'].includes(format)) throw new ConfigError(`invalid ${what}: ${format}`);
        out.logFormat = format as DaemonConfig['logFormat'];
        break;
      }
      case 'cacheBytesMax': out.cacheBytesMax = sizeOf(value, what); break;
      case 'commitIntervalMs': out.commitIntervalMs = intOf(value, what); break;
      case 'nbdBusyPollMicros': out.nbdBusyPollMicros = intOf(value, what); break;
      case 'kekRetryMs': out.kekRetryMs = intOf(value, what); break;
      case 'capacitySampleMs': {
        const ms = intOf(value, what);
        if (ms < 100) throw new ConfigError(`invalid ${what}: ${String(value)} (at least 100 ms)`);
        out.capacitySampleMs = ms;
        break;
      }
      case 'nvmf': out.nvmf = listenOf(value, what); break;
      case 'nvmfDiscovery': out.nvmfDiscovery = value === 'auto' ? 'auto' : listenOf(value, what); break;
      case 'nvmfAdvertise': out.nvmfAdvertise = value === null ? null : parseAdvertise(String(value), what); break;
      case 'nvmfNqnBase': out.nvmfNqnBase = nqnBaseOf(value, what); break;
      case 'nvmfInCapsuleBytes': {
        const bytes = sizeOf(value, what);
        if (bytes % 16 !== 0 || bytes > 128 * 1024) throw new ConfigError(`invalid ${what}: ${String(value)} (a multiple of 16, at most 128 KiB)`);
        out.nvmfInCapsuleBytes = bytes;
        break;
      }
      case 'cluster': out.cluster = clusterOf(value, what); break;
      case 'node': {
        const name = optionalText(value);
        if (name !== null && !NODE_NAME_RE.test(name)) throw new ConfigError(`invalid ${what}: ${JSON.stringify(name)} (letters, digits, '.', '_' and '-', at most 63)`);
        out.node = name;
        break;
      }
      case 'advertise': {
        const host = optionalText(value);
        if (host !== null && !/^(?:\[[0-9a-f:.]+\]|[^\s:/\[\]]+|[0-9a-f:.]+)$/i.test(host)) throw new ConfigError(`invalid ${what}: ${JSON.stringify(host)} (a host name or IP address, no port)`);
        out.advertise = host === null ? null : host.replace(/^\[(.*)\]$/, '$1');
        break;
      }
      case 'zone': out.zone = optionalText(value); break;
      case 'clusterSecretFile': out.clusterSecretFile = optionalText(value); break;
      case 'replPort': {
        const port = intOf(value, what);
        if (port < 1 || port > 65535) throw new ConfigError(`invalid ${what}: ${String(value)} (1..65535)`);
        out.replPort = port;
        break;
      }
      case 'replicasDefault': {
        const n = intOf(value, what);
        if (n < 1 || n > CLUSTER_REPLICAS_MAX) throw new ConfigError(`invalid ${what}: ${String(value)} (1..${CLUSTER_REPLICAS_MAX})`);
        out.replicasDefault = n;
        break;
      }
      case 'rewind':
        // A rewind discards a generation: asked for on the command line each time, never left in a file.
        if (source !== 'command line') throw new ConfigError(`rewind is a command-line flag only (cairn serve --rewind), not a setting (${source})`);
        out.rewind = value === true;
        break;
    }
  }
  return out;
}

function optionalText(value: unknown): string | null {
  if (value === null || value === false) return null;
  const text = String(value).trim();
  return text === '' ? null : text;
}

/** etcd endpoints: "URL[,URL…]" or a list; a bare HOST:PORT gets http://. Empty or "off" = no cluster. */
function clusterOf(value: unknown, what: string): string[] | null {
  if (value === null || value === false) return null;
  const items = (Array.isArray(value) ? value.map(String) : String(value).split(',')).map((u) => u.trim()).filter((u) => u !== '');
  if (items.length === 0 || (items.length === 1 && items[0] === 'off')) return null;
  return items.map((item) => {
    const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(item) ? item : `http://${item}`;
    let parsed: URL;
    try { parsed = new URL(url); } catch (err) {
      throw new ConfigError(`invalid ${what}: ${JSON.stringify(item)} is not an etcd URL (${(err as Error).message})`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ConfigError(`invalid ${what}: ${JSON.stringify(item)} (http:// or https:// etcd URLs)`);
    if (parsed.port === '') throw new ConfigError(`invalid ${what}: ${JSON.stringify(item)} has no port (etcd's client port is usually 2379)`);
    return `${parsed.protocol}//${parsed.host}`;
  });
}

/** The cluster settings belong together: a node name and an advertised host with --cluster, none without it. */
export function checkClusterConfig(config: DaemonConfig): DaemonConfig {
  if (config.cluster === null) {
    const stray = (['node', 'advertise', 'zone', 'replicasDefault', 'clusterSecretFile'] as const).filter((k) => config[k] !== null);
    if (stray.length > 0) throw new ConfigError(`${stray.join(', ')} ${stray.length > 1 ? 'are' : 'is'} set but --cluster is not: give --cluster ETCD_URL[,URL…] to run as a storage node, or drop ${stray.length > 1 ? 'them' : 'it'}`);
    return config;
  }
  const missing = [config.node === null ? '--node NAME' : null, config.advertise === null ? '--advertise HOST' : null].filter((x) => x !== null);
  if (missing.length > 0) throw new ConfigError(`--cluster needs ${missing.join(' and ')} (this node's name, and the host other nodes and clients reach it by)`);
  return config;
}

export function readConfigFile(path: string): ConfigLayer {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try { parsed = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text); } catch (err) {
    throw new ConfigError(`cannot parse config file ${path}: ${(err as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`config file ${path} is not a mapping`);
  return parsed as ConfigLayer;
}

/** CAIRN_POOL, CAIRN_STATE_DIR, CAIRN_POOL_SIZE, CAIRN_POOL_PREALLOCATE, CAIRN_API, CAIRN_NBD, CAIRN_NBD_SOCKET, CAIRN_LOG_LEVEL, CAIRN_LOG_FORMAT,
 *  CAIRN_CACHE_BYTES_MAX, CAIRN_COMMIT_INTERVAL_MS, CAIRN_CAPACITY_SAMPLE_MS, CAIRN_NBD_BUSY_POLL_US, CAIRN_NBD_TLS (psk|off), CAIRN_NBD_TLS_{CERT,KEY,CA,PSK,REQUIRED},
 *  CAIRN_API_TLS_{CERT,KEY,CLIENT_CA}, CAIRN_CLUSTER, CAIRN_NODE, CAIRN_ADVERTISE, CAIRN_ZONE, CAIRN_REPL_PORT, CAIRN_REPLICAS_DEFAULT,
 *  CAIRN_CLUSTER_SECRET_FILE. */
export function envLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  return {
    pool: env.CAIRN_POOL, stateDir: env.CAIRN_STATE_DIR, poolSize: env.CAIRN_POOL_SIZE, poolPreallocate: env.CAIRN_POOL_PREALLOCATE,
    api: env.CAIRN_API, nbd: env.CAIRN_NBD,
    apiTls: env.CAIRN_API_TLS_CERT === undefined ? undefined : {
      certFile: env.CAIRN_API_TLS_CERT, keyFile: env.CAIRN_API_TLS_KEY, clientCaFile: env.CAIRN_API_TLS_CLIENT_CA,
    },
    nbdSocketPath: env.CAIRN_NBD_SOCKET, logLevel: env.CAIRN_LOG_LEVEL, logFormat: env.CAIRN_LOG_FORMAT,
    cacheBytesMax: env.CAIRN_CACHE_BYTES_MAX, commitIntervalMs: env.CAIRN_COMMIT_INTERVAL_MS,
    nbdBusyPollMicros: env.CAIRN_NBD_BUSY_POLL_US,
    kekRetryMs: env.CAIRN_KEK_RETRY_MS, capacitySampleMs: env.CAIRN_CAPACITY_SAMPLE_MS,
    nvmf: env.CAIRN_NVMF, nvmfDiscovery: env.CAIRN_NVMF_DISCOVERY, nvmfAdvertise: env.CAIRN_NVMF_ADVERTISE,
    nvmfNqnBase: env.CAIRN_NVMF_NQN_BASE, nvmfInCapsuleBytes: env.CAIRN_NVMF_IN_CAPSULE_BYTES,
    cluster: env.CAIRN_CLUSTER, node: env.CAIRN_NODE, advertise: env.CAIRN_ADVERTISE, zone: env.CAIRN_ZONE,
    replPort: env.CAIRN_REPL_PORT, replicasDefault: env.CAIRN_REPLICAS_DEFAULT, clusterSecretFile: env.CAIRN_CLUSTER_SECRET_FILE,
    nbdTls: tlsLayer({
      mode: env.CAIRN_NBD_TLS, certFile: env.CAIRN_NBD_TLS_CERT, keyFile: env.CAIRN_NBD_TLS_KEY, caFile: env.CAIRN_NBD_TLS_CA,
      pskFile: env.CAIRN_NBD_TLS_PSK, required: env.CAIRN_NBD_TLS_REQUIRED,
    }),
  };
}

/** Merges every source in precedence order; throws ConfigError on the first invalid value. */
export function loadConfig(flags: ConfigLayer, env: NodeJS.ProcessEnv, configFile: string | undefined): DaemonConfig {
  let config = defaultConfig;
  const file = configFile ?? env.CAIRN_CONFIG;
  if (file !== undefined && file !== '') config = applyLayer(config, readConfigFile(file), `config file ${file}`);
  config = applyLayer(config, envLayer(env), 'environment');
  return checkClusterConfig(applyLayer(config, flags, 'command line'));
}
