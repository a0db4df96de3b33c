// The fixed newstyle handshake and option haggling (proto.md "Handshake", "Option types"): GO, INFO,
// EXPORT_NAME, LIST, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT, STARTTLS. Returns the negotiated
// export, or null when the session ended during haggling. Which exports exist is the connection's
// view (io.exports()), which STARTTLS may change: a name outside it is simply not there.
import type { Engine, Target } from '../engine/index.js';
import * as c from './constants.js';
import {
  optionReply, optionError, serverReplyData, metaContextReplyData, infoExport, infoBlockSize, infoString,
  exportNameReply,
} from './replies.js';
import { transmissionFlags } from './export-flags.js';
import { matchQueries, contextFromName, splitExportName, type MetaContext } from './meta-context.js';
import { OptionReader } from './option-reader.js';

/** What the connection object provides to the handshake. */
export interface HandshakeIo {
  /** Resolves with exactly n bytes; rejects when the connection closes. */
  read(n: number): Promise<Buffer>;
  /** Reads and drops n bytes without buffering them. */
  discard(n: number): Promise<void>;
  send(data: Buffer): void;
  /** Resolves once the client has read enough of what was sent (or at once, after one event-loop turn). */
  writable(): Promise<void>;
  /** null when TLS is not configured. */
  tlsRequired(): boolean | null;
  tlsActive(): boolean;
  startTls(): Promise<void>;
  /** The exports this client may see now (it changes with STARTTLS); null: none, the client is refused. */
  exports(): Engine | null;
  shuttingDown(): boolean;
  log(event: string, fields: Record<string, unknown>): void;
}

export interface Negotiated {
  target: Target;
  /** Size at negotiation; the connection keeps it (proto.md: the size does not change in transmission). */
  sizeBytes: number;
  structuredReplies: boolean;
  metaContexts: MetaContext[];
  /** The view the export was negotiated in; transmission does its I/O through it. */
  engine: Engine;
  /**
   * Whether the client asked for NBD_INFO_BLOCK_SIZE in its GO and so MUST keep to the advertised
   * maximum. Otherwise (EXPORT_NAME, or GO without the request) proto.md's default applies: a maximum
   * that is "effectively unlimited", which transmission.ts and commands.ts serve in pieces.
   */
  blockSizesAgreed: boolean;
}

interface State {
  fixedNewstyle: boolean;
  noZeroes: boolean;
  structuredReplies: boolean;
  metaExportName: string | null;
  metaContexts: MetaContext[];
}

/** A protocol violation after which the server hangs up (proto.md allows a hard disconnect). */
export class HangUp extends Error {}

export async function negotiate(io: HandshakeIo): Promise<Negotiated | null> {
  const greeting = Buffer.allocUnsafe(18);
  greeting.writeBigUInt64BE(c.NBDMAGIC, 0);
  greeting.writeBigUInt64BE(c.IHAVEOPT, 8);
  greeting.writeUInt16BE(c.NBD_FLAG_FIXED_NEWSTYLE | c.NBD_FLAG_NO_ZEROES, 16);
  io.send(greeting);
  const clientFlags = (await io.read(4)).readUInt32BE(0);
  // proto.md: the server MUST close the connection on client flags it does not recognize.
  if ((clientFlags & ~(c.NBD_FLAG_C_FIXED_NEWSTYLE | c.NBD_FLAG_C_NO_ZEROES)) !== 0) {
    throw new HangUp(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const state: State = {
    fixedNewstyle: (clientFlags & c.NBD_FLAG_C_FIXED_NEWSTYLE) !== 0,
    noZeroes: (clientFlags & c.NBD_FLAG_C_NO_ZEROES) !== 0,
    structuredReplies: false, metaExportName: null, metaContexts: [],
  };
  for (let count = 0; count < c.OPTIONS_PER_HANDSHAKE_MAX; count++) {
    const header = await io.read(16);
    if (header.readBigUInt64BE(0) !== c.IHAVEOPT) throw new HangUp('bad option magic');
    const option = header.readUInt32BE(8);
    const dataBytes = header.readUInt32BE(12);
    if (dataBytes > c.OPTION_BYTES_MAX) {
      // Never buffered: skipped as it streams in, then answered as its option would be (ABORT, TLS
      // required, unknown option), with TOO_BIG only where the option would have read the data.
      await io.discard(dataBytes);
      const result = await handleOption(io, state, option, null);
      if (result !== undefined) return result;
      continue;
    }
    const data = await io.read(dataBytes);
    const result = await handleOption(io, state, option, data);
    if (result !== undefined) return result;
  }
  throw new HangUp('too many options');
}

/**
 * Handles one option; returns the negotiated export (GO/EXPORT_NAME), null (ABORT), or undefined.
 * `data` null: the option's data was over OPTION_BYTES_MAX and has been skipped.
 */
async function handleOption(io: HandshakeIo, state: State, option: number, data: Buffer | null): Promise<Negotiated | null | undefined> {
  // Non-fixed newstyle knows no option replies: only EXPORT_NAME can be answered.
  if (!state.fixedNewstyle && option !== c.NBD_OPT_EXPORT_NAME) throw new HangUp('option without fixed newstyle');
  if (io.shuttingDown() && option !== c.NBD_OPT_ABORT) {
    if (option === c.NBD_OPT_EXPORT_NAME) throw new HangUp('shutting down');
    io.send(optionError(option, c.NBD_REP_ERR_SHUTDOWN, 'server is shutting down'));
    return undefined;
  }
  // FORCEDTLS (proto.md): every option but STARTTLS and ABORT gets TLS_REQD until TLS is up.
  if (io.tlsRequired() === true && !io.tlsActive() && option !== c.NBD_OPT_STARTTLS && option !== c.NBD_OPT_ABORT) {
    if (option === c.NBD_OPT_EXPORT_NAME) throw new HangUp('EXPORT_NAME before required TLS');
    io.send(optionError(option, c.NBD_REP_ERR_TLS_REQD, 'this server requires TLS (NBD_OPT_STARTTLS)'));
    return undefined;
  }
  if (option === c.NBD_OPT_ABORT) {
    // proto.md: the server MUST reply ACK (and SHOULD ignore any data).
    io.send(optionReply(option, c.NBD_REP_ACK));
    return null;
  }
  const engine = io.exports();
  // An identity the server serves nothing to (proto.md: NBD_REP_ERR_POLICY, "forbidden by server
  // policy"); STARTTLS still gets its own answer, which may lead to another identity.
  if (engine === null && option !== c.NBD_OPT_STARTTLS) {
    if (option === c.NBD_OPT_EXPORT_NAME) throw new HangUp('EXPORT_NAME from a client without access');
    io.send(optionError(option, c.NBD_REP_ERR_POLICY, 'no exports for this client'));
    return undefined;
  }
  if (data === null) return tooBig(io, state, option);
  // (A client without access gets here with STARTTLS only.)
  if (option === c.NBD_OPT_STARTTLS || engine === null) { await startTls(io, state, data); return undefined; }
  switch (option) {
    case c.NBD_OPT_EXPORT_NAME: return exportName(engine, io, state, data);
    case c.NBD_OPT_LIST: await listExports(engine, io, data); return undefined;
    case c.NBD_OPT_INFO:
    case c.NBD_OPT_GO: return infoOrGo(engine, io, state, option, data);
    case c.NBD_OPT_STRUCTURED_REPLY:
      if (data.length !== 0) { io.send(optionError(option, c.NBD_REP_ERR_INVALID, 'STRUCTURED_REPLY takes no data')); return undefined; }
      state.structuredReplies = true;
      io.send(optionReply(option, c.NBD_REP_ACK));
      return undefined;
    case c.NBD_OPT_LIST_META_CONTEXT:
    case c.NBD_OPT_SET_META_CONTEXT: await metaContext(engine, io, state, option, data); return undefined;
    default: return unsupported(io, option);
  }
}

function unsupported(io: HandshakeIo, option: number): undefined {
  io.send(optionError(option, c.NBD_REP_ERR_UNSUP, `option ${option} not supported`));
  return undefined;
}

/** An option whose data was too large to read: what it had to answer without the data. */
function tooBig(io: HandshakeIo, state: State, option: number): undefined {
  if (option === c.NBD_OPT_EXPORT_NAME) throw new HangUp('export name too long');
  if (!KNOWN_OPTIONS.has(option)) return unsupported(io, option);
  // proto.md: a failed SET_META_CONTEXT still replaces the earlier selection.
  if (option === c.NBD_OPT_SET_META_CONTEXT) clearMetaContexts(state);
  io.send(optionError(option, c.NBD_REP_ERR_TOO_BIG, `option data over ${c.OPTION_BYTES_MAX} bytes`));
  return undefined;
}

const KNOWN_OPTIONS = new Set([
  c.NBD_OPT_EXPORT_NAME, c.NBD_OPT_ABORT, c.NBD_OPT_LIST, c.NBD_OPT_STARTTLS, c.NBD_OPT_INFO, c.NBD_OPT_GO,
  c.NBD_OPT_STRUCTURED_REPLY, c.NBD_OPT_LIST_META_CONTEXT, c.NBD_OPT_SET_META_CONTEXT,
]);

function clearMetaContexts(state: State): void {
  state.metaExportName = null;
  state.metaContexts = [];
}

function resolveExport(engine: Engine, name: string): Target | string {
  if (name === '') return 'no default export: name a volume ("VOL") or a snapshot ("VOL@SNAP")';
  try {
    return engine.resolve(name);
  } catch (error) {
    return error instanceof Error ? error.message : 'unknown export';
  }
}

function exportName(engine: Engine, io: HandshakeIo, state: State, data: Buffer): Negotiated {
  const name = data.toString('utf8');
  const target = resolveExport(engine, name);
  // proto.md: EXPORT_NAME cannot fail with a reply; the server MUST terminate the session.
  if (typeof target === 'string') throw new HangUp(`EXPORT_NAME: ${target}`);
  const sizeBytes = engine.targetSizeBytes(target.id);
  io.send(exportNameReply(sizeBytes, transmissionFlags(target.readOnly, state.structuredReplies), state.noZeroes));
  return finish(engine, state, target, sizeBytes, false);
}

function finish(engine: Engine, state: State, target: Target, sizeBytes: number, blockSizesAgreed: boolean): Negotiated {
  // Contexts selected for another export do not apply to this one.
  const metaContexts = state.metaExportName === target.name ? state.metaContexts : [];
  return { target, sizeBytes, structuredReplies: state.structuredReplies, metaContexts, engine, blockSizesAgreed };
}

/**
 * Volumes, then snapshots by id, streamed: proto.md's LIST has no paging, so with 100 000 snapshots
 * the replies go out a batch at a time, each batch read from the engine as a page, with a pause for
 * the client to read and for the event loop to serve other connections between batches.
 */
async function listExports(engine: Engine, io: HandshakeIo, data: Buffer): Promise<void> {
  const option = c.NBD_OPT_LIST;
  if (data.length !== 0) { io.send(optionError(option, c.NBD_REP_ERR_INVALID, 'LIST takes no data')); return; }
  let listed = 0;
  const send = (name: string) => { io.send(optionReply(option, c.NBD_REP_SERVER, serverReplyData(name))); listed++; };
  for (const volume of engine.listVolumes()) {
    if (listed === c.EXPORTS_LISTED_MAX) break;
    send(volume.name);
    if (listed % c.EXPORTS_LISTED_PER_BATCH === 0) await io.writable();
  }
  let afterId = 0;
  while (listed < c.EXPORTS_LISTED_MAX) {
    const page = engine.listSnapshotsPage({ afterId, limit: Math.min(c.EXPORTS_LISTED_PER_BATCH, c.EXPORTS_LISTED_MAX - listed) });
    for (const snapshot of page.snapshots) send(snapshot.fullName);
    const last = page.snapshots[page.snapshots.length - 1];
    if (!page.more || last === undefined) break;
    afterId = last.id;
    await io.writable();
  }
  io.send(optionReply(option, c.NBD_REP_ACK));
}

async function startTls(io: HandshakeIo, state: State, data: Buffer): Promise<void> {
  const option = c.NBD_OPT_STARTTLS;
  if (io.tlsRequired() === null) { io.send(optionError(option, c.NBD_REP_ERR_UNSUP, 'TLS is not configured')); return; }
  if (data.length !== 0) { io.send(optionError(option, c.NBD_REP_ERR_INVALID, 'STARTTLS takes no data')); return; }
  if (io.tlsActive()) { io.send(optionError(option, c.NBD_REP_ERR_INVALID, 'TLS is already active')); return; }
  io.send(optionReply(option, c.NBD_REP_ACK));
  await io.startTls();
  // Nothing negotiated in plaintext survives the upgrade (it could have been tampered with).
  state.structuredReplies = false;
  clearMetaContexts(state);
}

function infoOrGo(engine: Engine, io: HandshakeIo, state: State, option: number, data: Buffer): Negotiated | undefined {
  const reader = new OptionReader(data);
  const name = reader.string32();
  const infoCount = reader.u16();
  const infos: number[] = [];
  for (let i = 0; i < (infoCount ?? 0) && reader.ok; i++) infos.push(reader.u16() ?? 0);
  if (name === null || infoCount === null || !reader.ok || !reader.atEnd()) {
    io.send(optionError(option, c.NBD_REP_ERR_INVALID, 'malformed INFO/GO request'));
    return undefined;
  }
  const target = resolveExport(engine, name);
  if (typeof target === 'string') { io.send(optionError(option, c.NBD_REP_ERR_UNKNOWN, target)); return undefined; }
  let sizeBytes: number;
  try { sizeBytes = engine.targetSizeBytes(target.id); } catch (error) {
    io.send(optionError(option, c.NBD_REP_ERR_UNKNOWN, error instanceof Error ? error.message : 'gone'));
    return undefined;
  }
  const flags = transmissionFlags(target.readOnly, state.structuredReplies);
  io.send(optionReply(option, c.NBD_REP_INFO, infoExport(sizeBytes, flags)));
  if (infos.includes(c.NBD_INFO_NAME)) io.send(optionReply(option, c.NBD_REP_INFO, infoString(c.NBD_INFO_NAME, target.name)));
  if (infos.includes(c.NBD_INFO_DESCRIPTION)) {
    const text = target.readOnly ? `Cairn snapshot ${target.name} (read-only)` : `Cairn volume ${target.name}`;
    io.send(optionReply(option, c.NBD_REP_INFO, infoString(c.NBD_INFO_DESCRIPTION, text)));
  }
  // Always sent: any offset is accepted (minimum 1) and 4 KiB is preferred. A client that asked for
  // the constraints is held to REQUEST_BYTES_MAX per payload; one that did not gets proto.md's default,
  // no limit (0xffffffff), which is what the server then accepts from it.
  const blockSizesAgreed = infos.includes(c.NBD_INFO_BLOCK_SIZE);
  const maxBytes = blockSizesAgreed ? c.REQUEST_BYTES_MAX : c.PAYLOAD_BYTES_UNLIMITED;
  io.send(optionReply(option, c.NBD_REP_INFO, infoBlockSize(c.BLOCK_SIZE_BYTES_MIN, c.BLOCK_SIZE_PREFERRED_BYTES, maxBytes)));
  io.send(optionReply(option, c.NBD_REP_ACK));
  return option === c.NBD_OPT_GO ? finish(engine, state, target, sizeBytes, blockSizesAgreed) : undefined;
}

async function metaContext(engine: Engine, io: HandshakeIo, state: State, option: number, data: Buffer): Promise<void> {
  const forList = option === c.NBD_OPT_LIST_META_CONTEXT;
  // proto.md: SET replaces every earlier selection, including when it fails.
  if (!forList) clearMetaContexts(state);
  // proto.md: MUST NOT be requested before structured replies; the server SHOULD answer INVALID.
  if (!state.structuredReplies) { io.send(optionError(option, c.NBD_REP_ERR_INVALID, 'negotiate structured replies first')); return; }
  const reader = new OptionReader(data);
  const name = reader.string32();
  const queryCount = reader.u32();
  const queries: string[] = [];
  for (let i = 0; i < (queryCount ?? 0) && reader.ok; i++) {
    const query = reader.string32();
    if (query !== null) queries.push(query);
  }
  if (name === null || queryCount === null || !reader.ok || !reader.atEnd()) {
    io.send(optionError(option, c.NBD_REP_ERR_INVALID, 'malformed meta context request'));
    return;
  }
  const target = resolveExport(engine, name);
  if (typeof target === 'string') { io.send(optionError(option, c.NBD_REP_ERR_UNKNOWN, target)); return; }
  const names = matchQueries(engine, target, queries, forList);
  if (!forList && names.length > c.META_CONTEXTS_SELECTED_MAX) {
    io.send(optionError(option, c.NBD_REP_ERR_TOO_BIG, `at most ${c.META_CONTEXTS_SELECTED_MAX} contexts`));
    return;
  }
  const [volume] = splitExportName(target.name);
  const selected = names.map((contextName, i) => contextFromName(i + 1, contextName, volume));
  for (let i = 0; i < selected.length; i++) {
    const context = selected[i]!;
    // proto.md: the context id in LIST replies is reserved and SHOULD be 0.
    io.send(optionReply(option, c.NBD_REP_META_CONTEXT, metaContextReplyData(forList ? 0 : context.id, context.name)));
    // A volume with 100 000 snapshots offers as many contexts: streamed like LIST.
    if ((i + 1) % c.EXPORTS_LISTED_PER_BATCH === 0) await io.writable();
  }
  if (!forList) {
    state.metaExportName = target.name;
    state.metaContexts = selected;
  }
  io.send(optionReply(option, c.NBD_REP_ACK));
}
