import type { CacheOutcome, Frame, FrameError, FrameType, WriteupRequest } from "./types";

const FRAME_TYPES: readonly FrameType[] = ["updated_response", "completed_response", "error", "oom_response"];
const CACHE_OUTCOMES: readonly CacheOutcome[] = ["hit", "join", "miss", "off"];

/** What the server accepts as a request_id: 1-64 characters from [A-Za-z0-9_.:-]. */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Replaces each lone UTF-16 surrogate with U+FFFD, as the server does with the prompt it echoes. */
export function toWellFormed(text: string): string {
  let out = "";
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
    } else if (!(c >= 0xdc00 && c <= 0xdfff)) {
      continue;
    }
    out += text.slice(start, i) + "\ufffd";
    start = i + 1;
  }
  return start === 0 ? text : out + text.slice(start);
}

/**
 * The prompt sent for a document: its last `maxChars` UTF-16 units (the original editor's
 * 500-character window), never starting inside a surrogate pair, well-formed.
 */
export function promptWindow(text: string, maxChars = 500): string {
  if (text.length <= maxChars) return toWellFormed(text);
  let start = text.length - maxChars;
  const c = text.charCodeAt(start);
  if (c >= 0xdc00 && c <= 0xdfff) start++; // do not begin with the second half of a pair
  return toWellFormed(text.slice(start));
}

/**
 * A suggestion as the writer may see and insert it: control characters (a small model can sample
 * them, e.g. U+0019) taken out; tabs and newlines kept.
 */
export function cleanSuggestion(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "");
}

/** The JSON text of a new_request frame. Optional fields that are unset are left out. */
export function newRequestFrame(request: WriteupRequest): string {
  const frame: Record<string, unknown> = {
    message_type: "new_request",
    prompt: request.prompt,
    temperature: request.temperature,
    top_k: request.top_k,
    top_p: request.top_p,
    length: request.length,
    batch_size: request.batch_size,
  };
  if (request.model_name) frame.model_name = request.model_name;
  if (request.seed !== undefined) frame.seed = request.seed;
  if (request.api_key) frame.api_key = request.api_key;
  if (request.request_id !== undefined) frame.request_id = request.request_id;
  return JSON.stringify(frame);
}

export function cancelRequestFrame(): string {
  return JSON.stringify({ message_type: "cancel_request" });
}

export class FrameParseError extends Error {}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseError(v: unknown): FrameError | undefined {
  if (!isRecord(v)) return undefined;
  return {
    code: typeof v.code === "string" ? v.code : "error",
    message: typeof v.message === "string" ? v.message : "",
    field: typeof v.field === "string" ? v.field : null,
  };
}

/** Parses one server frame; throws FrameParseError naming what is wrong. */
export function parseFrame(data: string): Frame {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    throw new FrameParseError("frame is not valid JSON");
  }
  if (!isRecord(json) || !isRecord(json.message)) throw new FrameParseError("frame has no \"message\" object");
  const m = json.message;
  const type = m.message_type;
  if (typeof type !== "string" || !(FRAME_TYPES as readonly string[]).includes(type)) {
    throw new FrameParseError(`unknown message_type ${JSON.stringify(type)}`);
  }
  const texts: string[] = [];
  for (let i = 0; i < 10; i++) {
    const t = m[`text_${i}`];
    if (t === undefined) break;
    if (typeof t !== "string") throw new FrameParseError(`text_${i} is not a string`);
    texts.push(t);
  }
  const frame: Frame = {
    type: type as FrameType,
    prompt: typeof m.prompt === "string" ? m.prompt : "",
    texts,
    cancelled: m.cancelled === true,
  };
  if (typeof m.model_name === "string") frame.modelName = m.model_name;
  if (typeof m.cache_key === "string" || m.cache_key === null) frame.cacheKey = m.cache_key;
  if ("request_id" in m) {
    if (typeof m.request_id !== "string" && m.request_id !== null) throw new FrameParseError("request_id is not a string or null");
    frame.requestId = m.request_id;
  }
  if (typeof m.cache === "string" && (CACHE_OUTCOMES as readonly string[]).includes(m.cache)) frame.cache = m.cache as CacheOutcome;
  if (typeof m.seed === "number") frame.seed = m.seed;
  if (typeof m.length === "number") frame.length = m.length;
  if (typeof m.completed === "number") frame.completed = m.completed;
  if (frame.type === "error") {
    frame.error = parseError(m.error) ?? { code: "error", message: texts[0] ?? "error", field: null };
  } else if (frame.type === "oom_response") {
    frame.error = { code: "out_of_memory", message: texts[0] ?? "the server ran out of memory", field: null };
  }
  return frame;
}
