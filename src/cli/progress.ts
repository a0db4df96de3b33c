// Progress bars for long operations (flatten, export, import, long deletes): cli-progress on stderr
// when it is a terminal, nothing otherwise (scripts and --json get no bar noise).
import cliProgress from 'cli-progress';

export interface Progress { update(fraction: number): void; stop(): void }

export function progressBar(label: string, enabled: boolean): Progress {
  if (!enabled || process.stderr.isTTY !== true) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {percentage}% | {eta_formatted}`, stream: process.stderr, hideCursor: true,
  }, cliProgress.Presets.shades_classic);
  bar.start(1000, 0);
  return {
    update(fraction) { bar.update(Math.round(Math.min(1, Math.max(0, fraction)) * 1000)); },
    stop() { bar.stop(); },
  };
}
