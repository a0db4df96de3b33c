// A throwaway SoftHSM2 token for tests of PKCS#11 KEKs: its own config and token directory in a temp
// dir, a token labelled "cairn" with a user PIN in a file, and AES-256 KEK objects added by a child
// process (so the test process's own module instance, one per process, is not initialized by the helper).
// SoftHSM reads SOFTHSM2_CONF at C_Initialize: call makeSoftHsm() once per test process, before the
// first openKek of a pkcs11: reference (a top-level await at the top of the test file does that).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Debian's softhsm2 package puts the module here. */
export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
export const SOFTHSM_TOKEN = 'cairn';
const USER_PIN = '4711-cairn';
const SO_PIN = '0815-cairn-so';

export interface SoftHsm {
  dir: string;
  conf: string;
  module: string;
  /** Where SoftHSM keeps the token: rename it to make the token vanish. */
  tokenDir: string;
  pin: string;
  pinFile: string;
  /** A full pkcs11: reference to a key object on the token, PIN from pinFile. */
  ref(objectLabel: string): string;
  /** Adds an AES-256 KEK object (token object, wrap/unwrap, sensitive, not extractable): these bytes, or generated. */
  addKey(label: string, bytes?: Buffer): Promise<void>;
  remove(): Promise<void>;
}

export async function makeSoftHsm(): Promise<SoftHsm> {
  if (!existsSync(SOFTHSM_MODULE)) {
    throw new Error(`SoftHSM2 is not installed (no ${SOFTHSM_MODULE}): install the Debian package softhsm2 (scripts/install-deps.sh does)`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'cairn-softhsm-'));
  const tokenDir = join(dir, 'tokens');
  const conf = join(dir, 'softhsm2.conf');
  const pinFile = join(dir, 'user.pin');
  await mkdir(tokenDir);
  await writeFile(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  await writeFile(pinFile, `${USER_PIN}\n`, { mode: 0o600 });
  process.env.SOFTHSM2_CONF = conf;
  await run('softhsm2-util', ['--init-token', '--free', '--label', SOFTHSM_TOKEN, '--so-pin', SO_PIN, '--pin', USER_PIN]);
  return {
    dir, conf, module: SOFTHSM_MODULE, tokenDir, pin: USER_PIN, pinFile,
    ref: (objectLabel) => `pkcs11:token=${SOFTHSM_TOKEN};object=${encodeURIComponent(objectLabel)}` +
      `?module-path=${SOFTHSM_MODULE}&pin-source=file:${pinFile}`,
    addKey: (label, bytes) => addKey(label, bytes),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Run in a child: it loads its own copy of the module, initializes, logs in, creates the key, finalizes. */
const ADD_KEY_SCRIPT = `
const [bindingPath, modulePath, tokenLabel, label, hex] = process.argv.slice(1);
const p = require(bindingPath);
const m = new p.PKCS11();
m.load(modulePath);
m.C_Initialize();
try {
  const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trimEnd() === tokenLabel);
  if (slot === undefined) throw new Error('no token ' + tokenLabel);
  const session = m.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
  m.C_Login(session, p.CKU_USER, process.env.CAIRN_TEST_USER_PIN);
  const template = [
    { type: p.CKA_CLASS, value: p.CKO_SECRET_KEY }, { type: p.CKA_KEY_TYPE, value: p.CKK_AES },
    { type: p.CKA_TOKEN, value: true }, { type: p.CKA_PRIVATE, value: true }, { type: p.CKA_LABEL, value: label },
    { type: p.CKA_WRAP, value: true }, { type: p.CKA_UNWRAP, value: true },
    { type: p.CKA_EXTRACTABLE, value: false }, { type: p.CKA_SENSITIVE, value: true },
  ];
  if (hex === '') m.C_GenerateKey(session, { mechanism: p.CKM_AES_KEY_GEN }, [...template, { type: p.CKA_VALUE_LEN, value: 32 }]);
  else m.C_CreateObject(session, [...template, { type: p.CKA_VALUE, value: Buffer.from(hex, 'hex') }]);
  m.C_CloseSession(session);
} finally {
  m.C_Finalize();
}
`;

async function addKey(label: string, bytes?: Buffer): Promise<void> {
  if (bytes !== undefined && bytes.length !== 32) throw new Error(`an AES-256 KEK is 32 bytes, got ${bytes.length}`);
  const bindingPath = createRequire(import.meta.url).resolve('pkcs11js');
  await run(process.execPath, ['-e', ADD_KEY_SCRIPT, bindingPath, SOFTHSM_MODULE, SOFTHSM_TOKEN, label, bytes?.toString('hex') ?? ''], {
    env: { ...process.env, CAIRN_TEST_USER_PIN: USER_PIN },
  });
}
