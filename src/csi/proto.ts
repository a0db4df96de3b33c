// Loads src/csi/csi.proto at run time with @grpc/proto-loader. The path is resolved from the
// repository root (the folder holding package.json), so this works from src/ under tsx and
// from dist/src/ after tsc alike.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Walks up from this module to the folder that holds package.json. */
export function findRepoRoot(fromUrl: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(fromUrl));
  for (let depth = 0; depth < 32; depth++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error('cairn csi: cannot find the repository root (package.json) above ' + fromUrl);
}

export const csiProtoPath = (): string => join(findRepoRoot(), 'src', 'csi', 'csi.proto');

export interface CsiServices {
  Identity: grpc.ServiceClientConstructor;
  Controller: grpc.ServiceClientConstructor;
  Node: grpc.ServiceClientConstructor;
  GroupController: grpc.ServiceClientConstructor;
}

/** Options shared by server and test clients: snake_case field names as in the spec. */
export const protoLoaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

let cached: CsiServices | undefined;

export function loadCsi(): CsiServices {
  if (cached) return cached;
  const definition = protoLoader.loadSync(csiProtoPath(), protoLoaderOptions);
  const root = grpc.loadPackageDefinition(definition) as unknown as { csi: { v1: CsiServices } };
  cached = root.csi.v1;
  return cached;
}
