// TypeScript shapes of the csi.proto messages this driver reads and writes, as
// @grpc/proto-loader presents them (snake_case, enums as strings, int64 as number, defaults
// filled in, `oneofs` adding the name of the set member). Only the fields we use.
export type StringMap = Record<string, string>;

export interface CapacityRange { required_bytes: number; limit_bytes: number }

export interface VolumeCapability {
  block?: Record<string, never> | null;
  mount?: { fs_type: string; mount_flags: string[]; volume_mount_group: string } | null;
  access_type?: 'block' | 'mount';
  access_mode?: { mode: string } | null;
}

export interface VolumeContentSource {
  snapshot?: { snapshot_id: string } | null;
  volume?: { volume_id: string } | null;
  type?: 'snapshot' | 'volume';
}

export interface Volume {
  capacity_bytes: number;
  volume_id: string;
  volume_context: StringMap;
  content_source: VolumeContentSource | null;
}

export interface Snapshot {
  size_bytes: number;
  snapshot_id: string;
  source_volume_id: string;
  creation_time: { seconds: number; nanos: number };
  ready_to_use: boolean;
  group_snapshot_id?: string;
}

export interface VolumeCondition { abnormal: boolean; message: string }

export interface CreateVolumeRequest {
  name: string;
  capacity_range: CapacityRange | null;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  volume_content_source: VolumeContentSource | null;
  accessibility_requirements: unknown;
  mutable_parameters: StringMap;
}

export interface NodeStageVolumeRequest {
  volume_id: string;
  staging_target_path: string;
  volume_capability: VolumeCapability | null;
  volume_context: StringMap;
  publish_context: StringMap;
  secrets?: StringMap;
}

export interface NodePublishVolumeRequest {
  volume_id: string;
  staging_target_path: string;
  target_path: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  volume_context: StringMap;
}
