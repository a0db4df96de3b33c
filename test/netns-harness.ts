// The network-namespace harness of test/cluster-netns.test.ts: a bridge in the root namespace, one
// namespace per node and per etcd member (veth into the bridge, an address of the test's own
// 10.77.S.0/24), processes started inside them (`ip netns exec`), and the faults a schedule applies:
// SIGKILL/restart, SIGSTOP/SIGCONT, iptables partitions inside a namespace, link delay. Names carry
// the test's pid so concurrent runs do not collide; cleanup kills every process and deletes every
// namespace and link, also when the test fails or the process exits early.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';

/** `ip netns exec` execs the command itself, so the child's pid is the process the faults signal. */
const IP = 'ip';
/** Subnet octets tried for 10.77.S.0/24 (the first free one from the pid's). */
const SUBNET_OCTETS_MAX = 250;
/** A bound on how long a process may take to exit after SIGKILL during cleanup. */
const EXIT_WAIT_MS_MAX = 5_000;

function sh(args: string[]): string {
  return execFileSync(IP, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function shNs(ns: string, argv: string[]): string {
  return execFileSync(IP, ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why network namespaces cannot be used here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add)';
  const probe = `cnprobe${process.pid}`;
  try {
    sh(['netns', 'add', probe]);
    sh(['netns', 'del', probe]);
    return null;
  } catch (e) {
    return `ip netns add failed: ${(e as Error).message.split('\n')[0]}`;
  }
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** Deletes the namespaces and bridges of earlier runs whose process is gone (a crashed run's leftovers). */
export function sweepStale(): void {
  const names = sh(['netns', 'list']).split('\n').map((l) => l.split(' ')[0]!).filter((n) => /^cn\d+-/.test(n));
  for (const ns of names) {
    const pid = Number(/^cn(\d+)-/.exec(ns)![1]);
    if (pidAlive(pid)) continue;
    // Processes a killed run left inside (this harness started them): without their run they only hold ports and disk.
    for (const left of sh(['netns', 'pids', ns]).split('\n').filter((l) => l !== '').map(Number)) {
      try { process.kill(left, 'SIGKILL'); } catch { /* exited meanwhile */ }
    }
    tryIp(['netns', 'del', ns]);
  }
  const links = sh(['-o', 'link', 'show', 'type', 'bridge']).split('\n').map((l) => /^\d+: (cn\d+br)[:@]/.exec(l)?.[1]).filter((n): n is string => n !== undefined);
  for (const br of links) if (!pidAlive(Number(/^cn(\d+)br$/.exec(br)![1]))) tryIp(['link', 'del', br]);
}

function tryIp(args: string[]): void {
  try { sh(args); } catch { /* already gone: cleanup is idempotent */ }
}

function freeSubnet(): number {
  const used = sh(['-4', '-o', 'addr', 'show']);
  for (let i = 0; i < SUBNET_OCTETS_MAX; i++) {
    const s = ((process.pid + i) % SUBNET_OCTETS_MAX) + 1;
    if (!used.includes(`10.77.${s}.`)) return s;
  }
  throw new Error('no free 10.77.S.0/24 subnet for the test network');
}

/** A host on the test network: a namespace with one veth into the bridge. */
export interface Host { name: string; ns: string; ip: string }

/** A process inside a namespace, restartable with the same command line. */
export class NsProcess {
  child: ChildProcess | null = null;
  private exited: Promise<number | null> | null = null;
  private readonly lineListeners = new Set<(line: string) => void>();
  readonly log: WriteStream;
  paused = false;

  constructor(readonly host: Host, readonly label: string, readonly argv: string[], logDir: string) {
    this.log = createWriteStream(join(logDir, `${label}.log`), { flags: 'a' });
  }

  get running(): boolean { return this.child !== null && this.child.exitCode === null && this.child.signalCode === null; }
  get pid(): number { return this.child?.pid ?? -1; }

  start(): void {
    if (this.running) throw new Error(`${this.label} is already running`);
    const child = spawn(IP, ['netns', 'exec', this.host.ns, ...this.argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.paused = false;
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    this.log.write(`--- start ${new Date().toISOString()} ${this.argv.join(' ')}\n`);
    let buffered = '';
    child.stdout!.on('data', (b: Buffer) => {
      this.log.write(b);
      buffered += b.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        for (const l of this.lineListeners) l(line);
      }
    });
    child.stderr!.on('data', (b: Buffer) => this.log.write(b));
  }

  /** Resolves with the first stdout line `match` accepts; rejects on exit or after `timeoutMs`. */
  waitLine(match: (line: string) => boolean, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const done = (): void => { clearTimeout(timer); this.lineListeners.delete(listener); };
      const listener = (line: string): void => { if (match(line)) { done(); resolve(line); } };
      const timer = setTimeout(() => { done(); reject(new Error(`${this.label}: no expected line within ${timeoutMs} ms (log ${this.log.path as string})`)); }, timeoutMs);
      this.lineListeners.add(listener);
      void this.exited?.then((code) => { done(); reject(new Error(`${this.label} exited ${code} (log ${this.log.path as string})`)); });
    });
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.running) return;
    this.child!.kill(sig);
    if (sig === 'SIGSTOP') this.paused = true;
    if (sig === 'SIGCONT') this.paused = false;
  }

  /** `sig` (after SIGCONT unless SIGKILL: a paused process cannot act on SIGTERM), and waits for the exit. */
  async stop(sig: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    if (!this.running) return this.child?.exitCode ?? null;
    if (sig !== 'SIGKILL') this.child!.kill('SIGCONT');
    this.paused = false;
    this.child!.kill(sig);
    const code = await Promise.race([this.exited!, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), EXIT_WAIT_MS_MAX))]);
    if (code === 'timeout') { this.child!.kill('SIGKILL'); return this.exited!; }
    return code;
  }
}

export interface NetworkOptions {
  nodes: number;
  etcdMembers: number;
  /** Where logs, etcd data and pools go. */
  dir: string;
}

/** The test network and everything started in it. */
export class TestNetwork {
  readonly tag = `cn${process.pid}`;
  readonly bridge = `${this.tag}br`;
  readonly subnet: number;
  /** The root namespace's address on the bridge (the client's). */
  readonly clientIp: string;
  readonly nodes: Host[] = [];
  readonly etcd: Host[] = [];
  readonly processes: NsProcess[] = [];
  private readonly exitHook = (): void => this.destroySync();
  /** A signal that ends the test process skips 'exit' hooks: clean up, then die of it as before. */
  private readonly signalHook = (sig: NodeJS.Signals): void => {
    this.destroySync();
    process.kill(process.pid, sig);
  };
  private netemChecked: boolean | null = null;

  constructor(readonly opts: NetworkOptions) {
    sweepStale();
    this.subnet = freeSubnet();
    this.clientIp = `10.77.${this.subnet}.1`;
    process.on('exit', this.exitHook);
    process.once('SIGINT', this.signalHook);
    process.once('SIGTERM', this.signalHook);
    mkdirSync(opts.dir, { recursive: true });
    try {
      sh(['link', 'add', this.bridge, 'type', 'bridge']);
      sh(['addr', 'add', `${this.clientIp}/24`, 'dev', this.bridge]);
      sh(['link', 'set', this.bridge, 'up']);
      for (let i = 1; i <= opts.nodes; i++) this.nodes.push(this.addHost(`n${i}`, 10 + i));
      for (let i = 1; i <= opts.etcdMembers; i++) this.etcd.push(this.addHost(`e${i}`, 30 + i));
    } catch (e) {
      this.destroySync();
      throw e;
    }
  }

  private addHost(name: string, octet: number): Host {
    const ns = `${this.tag}-${name}`;
    const outside = `${this.tag}${name}`;
    const inside = `${this.tag}${name}p`;
    const ip = `10.77.${this.subnet}.${octet}`;
    sh(['netns', 'add', ns]);
    sh(['link', 'add', outside, 'type', 'veth', 'peer', 'name', inside]);
    sh(['link', 'set', inside, 'netns', ns]);
    sh(['link', 'set', outside, 'master', this.bridge]);
    sh(['link', 'set', outside, 'up']);
    sh(['-n', ns, 'link', 'set', inside, 'name', 'eth0']);
    sh(['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    sh(['-n', ns, 'link', 'set', 'eth0', 'up']);
    sh(['-n', ns, 'link', 'set', 'lo', 'up']);
    return { name, ns, ip };
  }

  host(name: string): Host {
    const h = [...this.nodes, ...this.etcd].find((x) => x.name === name);
    if (h === undefined) throw new Error(`no host ${name}`);
    return h;
  }

  spawn(host: Host, label: string, argv: string[]): NsProcess {
    const p = new NsProcess(host, label, argv, this.opts.dir);
    this.processes.push(p);
    p.start();
    return p;
  }

  /** Drops everything between `host` and `peer` (both directions), by iptables inside `host`'s namespace. */
  partition(host: Host, peer: Host): void {
    shNs(host.ns, ['iptables', '-I', 'INPUT', '-s', peer.ip, '-j', 'DROP']);
    shNs(host.ns, ['iptables', '-I', 'OUTPUT', '-d', peer.ip, '-j', 'DROP']);
  }

  /** Drops everything between `host` and every other host, but not the client (the root namespace). */
  isolate(host: Host): void {
    for (const peer of [...this.nodes, ...this.etcd]) if (peer !== host) this.partition(host, peer);
  }

  /** Undoes partition/isolate of `host`. */
  heal(host: Host): void {
    shNs(host.ns, ['iptables', '-F', 'INPUT']);
    shNs(host.ns, ['iptables', '-F', 'OUTPUT']);
  }

  /** Whether the kernel has sch_netem (some minimal kernels lack it). */
  netemAvailable(): boolean {
    if (this.netemChecked === null) {
      const h = this.nodes[0] ?? this.etcd[0]!;
      try {
        shNs(h.ns, ['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'netem', 'delay', '1ms']);
        shNs(h.ns, ['tc', 'qdisc', 'del', 'dev', 'eth0', 'root']);
        this.netemChecked = true;
      } catch {
        this.netemChecked = false; // "Specified qdisc kind is unknown": CONFIG_NET_SCH_NETEM is off
      }
    }
    return this.netemChecked;
  }

  /**
   * Slows `host`'s link: netem's fixed delay when the kernel has it, else a token-bucket throttle
   * (tbf: queueing delay under load, up to `delayMs` of queue). Returns which was applied.
   */
  slow(host: Host, delayMs: number): 'netem' | 'tbf' {
    if (this.netemAvailable()) {
      shNs(host.ns, ['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'netem', 'delay', `${delayMs}ms`]);
      return 'netem';
    }
    shNs(host.ns, ['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', '4mbit', 'burst', '16kb', 'latency', `${delayMs}ms`]);
    return 'tbf';
  }

  unslow(host: Host): void {
    try { shNs(host.ns, ['tc', 'qdisc', 'del', 'dev', 'eth0', 'root']); } catch { /* no qdisc was added: nothing to undo */ }
  }

  /** Whether a TCP connection from `from`'s namespace (null: the root namespace) to ip:port succeeds within 2 s. */
  canConnect(from: Host | null, ip: string, port: number): boolean {
    const script = 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()';
    const argv = ['/usr/bin/python3', '-c', script, ip, String(port)];
    try {
      if (from === null) execFileSync(argv[0]!, argv.slice(1), { stdio: 'ignore' });
      else shNs(from.ns, argv);
      return true;
    } catch {
      return false; // refused, timed out or unreachable: that is the answer
    }
  }

  /** Stops every process (SIGKILL), deletes the namespaces and the bridge. */
  async destroy(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.stop('SIGKILL')));
    this.destroySync();
  }

  private destroySync(): void {
    for (const p of this.processes) {
      if (p.running) p.child!.kill('SIGKILL');
      p.log.end();
    }
    // The root-side veth goes first: deleting it deletes its peer, even when a mount of the
    // namespace held elsewhere (another process's mount namespace) keeps the namespace alive.
    for (const h of [...this.nodes, ...this.etcd]) {
      tryIp(['link', 'del', `${this.tag}${h.name}`]);
      tryIp(['netns', 'del', h.ns]);
    }
    tryIp(['link', 'del', this.bridge]);
    process.off('exit', this.exitHook);
    process.off('SIGINT', this.signalHook);
    process.off('SIGTERM', this.signalHook);
  }

  /** Names of this run's namespaces and links still present (empty after destroy). */
  leftovers(): string[] {
    const ns = sh(['netns', 'list']).split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${this.tag}-`));
    const links = sh(['-o', 'link', 'show']).split('\n').map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1]).filter((n): n is string => n !== undefined && n.startsWith(this.tag));
    return [...ns, ...links];
  }
}

/** etcd members in their namespaces as one static cluster. */
export class EtcdCluster {
  readonly members: NsProcess[] = [];

  constructor(readonly net: TestNetwork) {
    const initial = net.etcd.map((h) => `${h.name}=http://${h.ip}:2380`).join(',');
    for (const h of net.etcd) {
      const data = join(net.opts.dir, `etcd-${h.name}`);
      this.members.push(net.spawn(h, `etcd-${h.name}`, ['etcd', '--name', h.name, '--data-dir', data,
        '--listen-client-urls', `http://${h.ip}:2379`, '--advertise-client-urls', `http://${h.ip}:2379`,
        '--listen-peer-urls', `http://${h.ip}:2380`, '--initial-advertise-peer-urls', `http://${h.ip}:2380`,
        '--initial-cluster', initial, '--initial-cluster-token', net.tag, '--initial-cluster-state', 'new',
        '--logger', 'zap', '--log-outputs', 'stderr']));
    }
  }

  get endpoints(): string[] { return this.net.etcd.map((h) => `http://${h.ip}:2379`); }

  member(name: string): NsProcess {
    const m = this.members.find((p) => p.host.name === name);
    if (m === undefined) throw new Error(`no etcd member ${name}`);
    return m;
  }

  /** Whether the member at `endpoint` reports itself healthy (it has a leader and answers). */
  async healthy(endpoint: string): Promise<boolean> {
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(2_000) });
      const body = await res.json() as { health?: string };
      return body.health === 'true';
    } catch {
      return false; // unreachable, paused or without a leader: not healthy
    }
  }

  /** Waits until every running, unpaused member is healthy. */
  async waitHealthy(timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const up = this.members.filter((m) => m.running && !m.paused);
      const states = await Promise.all(up.map((m) => this.healthy(`http://${m.host.ip}:2379`)));
      if (states.every((s) => s)) return;
      if (Date.now() > end) throw new Error(`etcd not healthy within ${timeoutMs} ms: ${up.map((m, i) => `${m.label}=${states[i]}`).join(' ')}`);
      await sleep(200);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
