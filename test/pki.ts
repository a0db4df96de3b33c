// A throwaway PKI for the TLS tests (openssl, EC P-256, two-day certificates): a CA, a server
// certificate for localhost and 127.0.0.1, and client credentials in the directory layout libnbd and
// qemu read (ca-cert.pem, client-cert.pem, client-key.pem).
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runOk } from './nbd-harness.js';

export interface ClientCredentials { cert: string; key: string; /** libnbd/qemu credential directory */ dir: string }

export interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  /** A directory holding only the CA (a client that verifies the server and shows no certificate). */
  caOnlyDir: string;
  /** A client certificate for `subject`, with `san` as its subjectAltName when given. */
  client(name: string, subject: string, san?: string): Promise<ClientCredentials>;
}

const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function makePki(base: string, caName = 'Cairn test CA'): Promise<Pki> {
  const dir = path.join(base, 'pki');
  await mkdir(dir, { recursive: true });
  const p = (name: string): string => path.join(dir, name);
  await runOk('openssl', ['req', '-x509', ...ec, '-keyout', p('ca-key.pem'), '-out', p('ca-cert.pem'), '-days', '2',
    '-subj', `/CN=${caName}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const sign = async (name: string, subject: string, ext: string): Promise<void> => {
    await runOk('openssl', ['req', ...ec, '-keyout', p(`${name}-key.pem`), '-out', p(`${name}.csr`), '-subj', subject]);
    await writeFile(p(`${name}.ext`), ext);
    await runOk('openssl', ['x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca-cert.pem'), '-CAkey', p('ca-key.pem'),
      '-CAcreateserial', '-out', p(`${name}-cert.pem`), '-days', '2', '-extfile', p(`${name}.ext`)]);
  };
  await sign('server', '/CN=localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  const caOnlyDir = path.join(base, 'client-ca-only');
  await mkdir(caOnlyDir, { recursive: true });
  await copyFile(p('ca-cert.pem'), path.join(caOnlyDir, 'ca-cert.pem'));
  return {
    ca: p('ca-cert.pem'), serverCert: p('server-cert.pem'), serverKey: p('server-key.pem'), caOnlyDir,
    async client(name, subject, san) {
      await sign(name, subject, `${san === undefined ? '' : `subjectAltName=${san}\n`}basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n`);
      const clientDir = path.join(base, `client-${name}`);
      await mkdir(clientDir, { recursive: true });
      await copyFile(p('ca-cert.pem'), path.join(clientDir, 'ca-cert.pem'));
      await copyFile(p(`${name}-cert.pem`), path.join(clientDir, 'client-cert.pem'));
      await copyFile(p(`${name}-key.pem`), path.join(clientDir, 'client-key.pem'));
      return { cert: p(`${name}-cert.pem`), key: p(`${name}-key.pem`), dir: clientDir };
    },
  };
}
