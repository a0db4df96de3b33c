// The keyring's place in the pool's life: made with the first encrypted volume (the pool becomes
// format 5), loaded at open with its slots checked against the catalog: a slot that no record names is
// a lineage whose deletion (or creation) a crash interrupted, and is shredded; a damaged copy of a
// slot is rewritten from the other one.
import { FIRST_FREE_BLOCK, FORMAT_VERSION_KEYRING, LOG_REGION_SCAN_PAGES_MAX, keyringBlocksFor } from './constants.js';
import { hasIntentLog, hasKeyring } from './superblock.js';
import { Keyring } from './keyring.js';
import { InvalidArgument, PoolCorrupt, PoolFull, assert } from './errors.js';
import type { PoolCore } from './pool.js';

/** At open: loads the keyring of a format-5 pool and reconciles it with the catalog. */
export async function openKeyring(core: PoolCore): Promise<void> {
  const { sb } = core;
  if (!hasKeyring(sb.formatVersion)) {
    if (core.catalog.keyUsers.size > 0) throw new PoolCorrupt(`the catalog names key slots but the pool (format ${sb.formatVersion}) has no keyring`);
    return;
  }
  const end = sb.keyringStartBlock + 2 * sb.keyringBlocks;
  if (!(sb.keyringBlocks >= 1 && sb.keyringStartBlock >= FIRST_FREE_BLOCK && end <= sb.totalBlocks)) {
    throw new PoolCorrupt(`superblock names keyring region [${sb.keyringStartBlock}, ${end}) outside the pool`);
  }
  const { keyring, findings } = await Keyring.load(core.device, { startBlock: sb.keyringStartBlock, blocks: sb.keyringBlocks }, sb.poolUuid);
  core.keyring = keyring;
  for (const keyId of core.catalog.keyUsers.keys()) {
    if (keyId > keyring.slotCount) throw new PoolCorrupt(`the catalog names key slot ${keyId}, past the keyring's ${keyring.slotCount}`);
    if (keyring.copiesOf(keyId).length === 0) core.log('key_slot_lost', { keyId, message: `no valid copy of key slot ${keyId} is left: its lineage stays locked` });
  }
  const orphans = keyring.usedKeyIds().filter((keyId) => !core.catalog.keyUsers.has(keyId));
  if (orphans.length > 0) {
    await keyring.shred(orphans);
    core.log('key_orphans_shredded', { keyIds: orphans });
  }
  for (const d of findings.damaged) {
    if (!core.catalog.keyUsers.has(d.keyId) || keyring.copiesOf(d.keyId).length === 0) continue;
    await keyring.repair(d.keyId, d.copy);
    core.superblockRepair = true; // the next commit (open's, or close's) runs and its flush makes the repair durable
    core.log('key_slot_repaired', { keyId: d.keyId, copy: d.copy, cause: d.cause });
  }
}

/**
 * The pool's keyring, made on first use: a free run for both copies is taken in the space map and
 * zeroed, and the superblock names it (format 5) in a commit of its own, whose first flush makes the
 * zeroes durable before the superblock names them.
 */
export async function ensureKeyring(core: PoolCore): Promise<Keyring> {
  if (core.keyring !== null) return core.keyring;
  if (!hasIntentLog(core.sb.formatVersion)) {
    throw new InvalidArgument(`this pool is format ${core.sb.formatVersion} (no room was free for an intent log when it was upgraded): it cannot hold encrypted volumes until space is freed and it is reopened`);
  }
  const blocks = keyringBlocksFor(core.sb.totalBlocks);
  const made = await core.mutate(async () => {
    if (core.keyring !== null) return null; // made by a concurrent create meanwhile
    const at = await core.space.findFreeRun(2 * blocks, LOG_REGION_SCAN_PAGES_MAX);
    if (at === null) throw new PoolFull(`pool is full: no free run of ${2 * blocks} blocks for the keyring of encrypted volumes`);
    await core.space.addRange(at, 2 * blocks, 1);
    // Taken and named in one lock hold: a concurrent create sees it at once.
    const keyring = Keyring.empty(core.device, { startBlock: at, blocks }, core.sb.poolUuid);
    core.keyring = keyring;
    core.sb = { ...core.sb, formatVersion: FORMAT_VERSION_KEYRING, keyringStartBlock: at, keyringBlocks: blocks };
    // Queued first on the keyring's own order, so no slot write can land before the zeroes.
    return { keyring, zeroed: keyring.zeroRegion() };
  });
  if (made !== null) {
    await made.zeroed;
    // Committed on its own, before any slot is written: a slot written for a create that a crash cuts
    // short then lies in a keyring the next open knows (and shreds it), never in blocks left free.
    await core.commit();
    core.log('keyring_created', { ...made.keyring.region, slots: made.keyring.slotCount });
    return made.keyring;
  }
  assert(core.keyring !== null, 'a keyring made by a concurrent create');
  return core.keyring;
}
