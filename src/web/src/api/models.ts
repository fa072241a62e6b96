import { apiKeyProblem, keyToSend } from "./apiKey";

/** One entry of GET /v1/models as the server answers it. */
export interface ServerModel {
  id: string;
  aliases: string[];
  ready: boolean;
  contextLength?: number;
  /** shown next to the model; a notice such as "random weights" when the server sends one */
  notice?: string;
}

/** What the picker offers: every model and each of its aliases. */
export interface ModelChoice {
  /** the name sent as model_name */
  name: string;
  label: string;
  ready: boolean;
  contextLength?: number;
  notice?: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads GET /v1/models; entries that are not models are skipped. */
export function parseModels(json: unknown): ServerModel[] {
  if (!isRecord(json) || !Array.isArray(json.data)) throw new Error("GET /v1/models: no \"data\" list");
  const out: ServerModel[] = [];
  for (const m of json.data) {
    if (!isRecord(m) || typeof m.id !== "string") continue;
    const model: ServerModel = {
      id: m.id,
      aliases: Array.isArray(m.aliases) ? m.aliases.filter((a): a is string => typeof a === "string") : [],
      ready: m.ready !== false,
    };
    if (typeof m.context_length === "number") model.contextLength = m.context_length;
    if (typeof m.notice === "string" && m.notice) model.notice = m.notice;
    out.push(model);
  }
  return out;
}

/** "gpt2-medium" -> "GPT-2 medium", "tiny-gpt2" -> "tiny GPT-2". */
export function readableName(name: string): string {
  return name.replace(/[-_]+/g, " ").replace(/\bgpt ?2\b/gi, "GPT-2").trim() || name;
}

export function modelChoices(models: ServerModel[]): ModelChoice[] {
  const out: ModelChoice[] = [];
  for (const m of models) {
    const base = { ready: m.ready, contextLength: m.contextLength, notice: m.notice };
    out.push({ name: m.id, label: readableName(m.id), ...base });
    for (const a of m.aliases) out.push({ name: a, label: `${readableName(a)} (= ${m.id})`, ...base });
  }
  return out;
}

/** GET /v1/models answered with an error status; `code` is the server's error code when it sent one. */
export class ModelsError extends Error {
  constructor(message: string, readonly status: number, readonly code: string | null) {
    super(message);
    this.name = "ModelsError";
  }
}

/** The `error.code` of an error answer, or null. */
async function errorCode(res: Response): Promise<string | null> {
  try {
    const body: unknown = await res.json();
    return isRecord(body) && isRecord(body.error) && typeof body.error.code === "string" ? body.error.code : null;
  } catch {
    return null;
  }
}

/**
 * Reads GET /v1/models; with an API key (not blank) it goes as `Authorization: Bearer KEY`.
 * An error answer throws a ModelsError (a 401 with the server's missing_api_key / invalid_api_key).
 */
export async function fetchModels(apiKey = "", fetchImpl: typeof fetch = fetch): Promise<ServerModel[]> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const key = keyToSend(apiKey);
  if (key) {
    // fetch refuses a header value it cannot send; say which setting holds it
    if (!/^[\x20-\x7e]*$/.test(key)) throw new ModelsError("the API key holds characters other than printable ASCII (an HTTP header cannot carry them)", 0, "invalid_api_key");
    headers.Authorization = `Bearer ${key}`;
  }
  const res = await fetchImpl("/v1/models", { headers });
  if (!res.ok) {
    const code = await errorCode(res);
    // a 401 without a code is still about the key
    const keyCode = res.status === 401 && apiKeyProblem(code) === null ? (key ? "invalid_api_key" : "missing_api_key") : code;
    throw new ModelsError(`GET /v1/models answered ${res.status}`, res.status, keyCode);
  }
  return parseModels(await res.json());
}
