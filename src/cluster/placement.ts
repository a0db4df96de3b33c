// Where a volume's replicas go (design "Placement"): N distinct alive, non-draining nodes; distinct
// zones first; among equals the node holding the fewest replicas; ties by name. Pure and
// deterministic given its inputs (the simulator replays it from a seed).

export interface PlacementCandidate {
  name: string;
  zone: string | null;
  /** Replicas (members of any volume) the node holds now. */
  replicas: number;
}

/**
 * Picks `count` nodes among `candidates` (already filtered to alive, non-draining ones), avoiding the
 * nodes in `exclude` and preferring zones not in `usedZones` (a replacement keeps the volume's other
 * members' zones in mind). Returns null when there are fewer candidates than `count`.
 */
export function placeReplicas(
  candidates: readonly PlacementCandidate[], count: number, exclude: ReadonlySet<string> = new Set(), usedZones: ReadonlySet<string> = new Set(),
): string[] | null {
  const pool = candidates.filter((c) => !exclude.has(c.name))
    .sort((a, b) => a.replicas - b.replicas || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (pool.length < count) return null;
  const zones = new Set(usedZones);
  const chosen: string[] = [];
  // Two passes: first only nodes of a zone not yet used (a node without a zone is its own domain),
  // then the fewest-replicas order for the rest.
  for (const c of pool) {
    if (chosen.length === count) break;
    if (c.zone !== null && zones.has(c.zone)) continue;
    chosen.push(c.name);
    if (c.zone !== null) zones.add(c.zone);
  }
  for (const c of pool) {
    if (chosen.length === count) break;
    if (!chosen.includes(c.name)) chosen.push(c.name);
  }
  return chosen;
}
