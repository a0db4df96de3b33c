// Errors of the tenancy layer, with stable codes the API maps to HTTP statuses (api/problem.ts).
export type TenancyErrorCode =
  | 'tenant_not_found' | 'tenant_not_empty' | 'token_not_found' | 'nbd_key_not_found' | 'nvme_host_not_found'
  | 'unauthorized' | 'forbidden' | 'too_many_requests' | 'tenant_busy';

export class TenancyError extends Error {
  constructor(readonly code: TenancyErrorCode | 'invalid_argument' | 'name_taken', message: string) {
    super(message);
    this.name = 'TenancyError';
  }
}
