// What GET /v1/dashboard answers (api/routers/ui.py).
export interface PoolRow {
  id: string;
  name: string;
  type: string;
  online: boolean;
  cpu_cores: number;
  cpu_reserved: number;
  ram_gb: number;
  gpus: number;
  gpus_reserved: number;
  gpu_model: string | null;
  running: number;
  queue_length: number;
  price_cpu_core_hour: number | null;
  price_gpu_hour: number | null;
  currency: string;
  reputation: number | null;
  scu: Record<string, number>;
}

export interface Site {
  id: string;
  name: string;
  type: string;
  provider_id: string;
  region_code: string;
  region_name: string;
  lat: number | null;
  lon: number | null;
  online: boolean;
  last_heartbeat: number | null;
  pools: PoolRow[];
}

export interface Link {
  a: string;
  b: string;
  rtt_ms: number;
  mbps: number;
  source: string;
}

export interface FlowMinute {
  minute: number;
  queued: number;
  running: number;
  complete: number;
  failed: number;
  canceled: number;
}

export interface Overview {
  at: number;
  who: { role: string; org_id: string | null };
  sites: Site[];
  links: Link[];
  tasks: Record<string, number>;
  flow: FlowMinute[];
}
