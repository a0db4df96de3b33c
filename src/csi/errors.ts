// gRPC status errors for CSI. Handlers throw CsiError with the code the spec names for each
// case; anything else that escapes a handler becomes INTERNAL with its message (never a stack).
import { status as Status } from '@grpc/grpc-js';

export { Status };

export class CsiError extends Error {
  readonly code: Status;
  constructor(code: Status, message: string) {
    super(message);
    this.name = 'CsiError';
    this.code = code;
  }
}

export const invalidArgument = (message: string): CsiError => new CsiError(Status.INVALID_ARGUMENT, message);
export const notFound = (message: string): CsiError => new CsiError(Status.NOT_FOUND, message);
export const alreadyExists = (message: string): CsiError => new CsiError(Status.ALREADY_EXISTS, message);
export const outOfRange = (message: string): CsiError => new CsiError(Status.OUT_OF_RANGE, message);
export const failedPrecondition = (message: string): CsiError => new CsiError(Status.FAILED_PRECONDITION, message);
export const aborted = (message: string): CsiError => new CsiError(Status.ABORTED, message);
export const unavailable = (message: string): CsiError => new CsiError(Status.UNAVAILABLE, message);
export const unimplemented = (message: string): CsiError => new CsiError(Status.UNIMPLEMENTED, message);
export const internal = (message: string): CsiError => new CsiError(Status.INTERNAL, message);
export const resourceExhausted = (message: string): CsiError => new CsiError(Status.RESOURCE_EXHAUSTED, message);
export const permissionDenied = (message: string): CsiError => new CsiError(Status.PERMISSION_DENIED, message);

export function toCsiError(err: unknown): CsiError {
  if (err instanceof CsiError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return internal(message);
}
