/** The writer's generation settings, kept in localStorage. */
export interface Settings {
  /** "" = the server's default model */
  model: string;
  length: number;
  temperature: number;
  topK: number;
  topP: number;
  batchSize: number;
  /** null = the server's default seed */
  seed: number | null;
  /** the server's API key ("" = none); sent as the Bearer header of GET /v1/models and as api_key */
  apiKey: string;
}

export const DEFAULT_SETTINGS: Settings = {
  model: "",
  length: 20,
  temperature: 0.7,
  topK: 10,
  topP: 0,
  batchSize: 3,
  seed: null,
  apiKey: "",
};

const KEY = "writeup.settings.v1";

function clampNumber(v: unknown, lo: number, hi: number, fallback: number, integer: boolean): number {
  if (typeof v !== "number" || !Number.isFinite(v)) return fallback;
  const n = integer ? Math.round(v) : v;
  return Math.min(hi, Math.max(lo, n));
}

/** Settings from any JSON value, each field checked against the protocol's ranges. */
export function sanitizeSettings(v: unknown): Settings {
  const o = typeof v === "object" && v !== null ? (v as Record<string, unknown>) : {};
  const d = DEFAULT_SETTINGS;
  return {
    model: typeof o.model === "string" ? o.model : d.model,
    length: clampNumber(o.length, 1, 256, d.length, true),
    temperature: clampNumber(o.temperature, 0.1, 1, d.temperature, false),
    topK: clampNumber(o.topK, 0, 40, d.topK, true),
    topP: clampNumber(o.topP, 0, 1, d.topP, false),
    batchSize: clampNumber(o.batchSize, 1, 10, d.batchSize, true),
    seed: o.seed === null || o.seed === undefined ? null : clampNumber(o.seed, 0, Number.MAX_SAFE_INTEGER, 0, true),
    apiKey: typeof o.apiKey === "string" ? o.apiKey : d.apiKey,
  };
}

export function loadSettings(storage: Storage | undefined = globalThis.localStorage): Settings {
  try {
    const raw = storage?.getItem(KEY);
    return raw ? sanitizeSettings(JSON.parse(raw)) : { ...DEFAULT_SETTINGS };
  } catch {
    return { ...DEFAULT_SETTINGS };
  }
}

export function saveSettings(s: Settings, storage: Storage | undefined = globalThis.localStorage): void {
  try {
    storage?.setItem(KEY, JSON.stringify(s));
  } catch {
    // storage full or disabled: settings last for this page only
  }
}
