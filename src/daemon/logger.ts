// Structured logs: pino JSON lines on stdout, one per event; pino-pretty when stdout is a terminal
// (or logFormat says so). The engine's and the NBD server's (event, fields) callbacks log through it.
import { pino, type Logger } from 'pino';
import type { DaemonConfig } from './config.js';

export function createLogger(config: Pick<DaemonConfig, 'logLevel' | 'logFormat'>): Logger {
  const pretty = config.logFormat === 'pretty' || (config.logFormat === 'auto' && process.stdout.isTTY === true);
  if (pretty) {
    return pino({ level: config.logLevel, transport: { target: 'pino-pretty', options: { colorize: true, destination: 1 } } });
  }
  // Synchronous writes: the last lines before exit (shutdown, fatal errors) must not be lost.
  return pino({ level: config.logLevel, base: { pid: process.pid } }, pino.destination({ dest: 1, sync: true }));
}

/** An (event, fields) callback as the engine and NBD server take, logging at info (warn for errors). */
export function eventLogger(logger: Logger, component: string): (event: string, fields: Record<string, unknown>) => void {
  return (event, fields) => {
    const level = /error|fail|corrupt|rewind|warning/.test(event) ? 'warn' : event === 'commit' ? 'debug' : 'info';
    logger[level]({ component, event, ...fields }, event);
  };
}
