// Rebuild (design "Rebuild"), driven by the primary one member at a time per volume while I/O goes on.
import type { ClusterNode } from './node.js';

export class Rebuilder {
  constructor(private readonly node: ClusterNode) {}
  consider(_vol: string): void { void this.node; }
  progress(_vol: string, _member: string): number | null { return null; }
}
