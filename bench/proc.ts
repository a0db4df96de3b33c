// Process helpers the benches share: run a client to completion and keep its stdout; a free port.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import net from 'node:net';

export function runCapture(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env === undefined ? {} : { env }) });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} exited ${code}: ${err}`))));
  });
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Waits for a `cairn serve --log-format json` child's "ready" line: its API and NBD addresses, and a
 * promise of its exit. Every line is read to the end (a full pipe would stall the daemon).
 */
export async function serveReady(child: ChildProcess): Promise<{ exited: Promise<void>; ready: { api: string; nbd: string } }> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<{ api: string; nbd: string }>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      if (!line.includes('"ready"')) return;
      const event = JSON.parse(line) as { event?: string; api?: string; nbd?: string };
      if (event.event === 'ready' && event.api !== undefined && event.nbd !== undefined) resolve({ api: event.api, nbd: event.nbd });
    });
    void exited.then(() => reject(new Error(`cairn serve exited (${child.exitCode ?? child.signalCode}) before it was ready`)));
  });
  return { exited, ready };
}
