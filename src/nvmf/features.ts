// STAND-IN until nvmfadmin's features.ts is merged: the controller's feature values.
export class FeatureStore {
  ioQueuesGranted = 0;
  asyncEventConfig = 0;
  keepAliveMs = 0;
  constructor(readonly ioQueuesMax: number) {}
}
