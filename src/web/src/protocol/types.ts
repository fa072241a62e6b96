// The writeup editor protocol, as src/api/writeup_protocol.cpp and src/server/websocket_session.cpp
// define it: the client sends new_request / cancel_request; the server answers with frames wrapped
// in {"message": {...}} carrying text_0..text_{batch_size-1}.

/** The fields of a new_request (server ranges in comments; the server validates them). */
export interface WriteupRequest {
  prompt: string;
  /** 0.1 .. 1.0 */
  temperature: number;
  /** 0 .. 40 (0 = off) */
  top_k: number;
  /** 0 .. 1 (0 = off) */
  top_p: number;
  /** tokens per suggestion, 1 .. 256 (and below the model's context) */
  length: number;
  /** number of suggestions, 1 .. 10 */
  batch_size: number;
  /** empty or absent = the server's default model */
  model_name?: string;
  /** absent = the server's default seed */
  seed?: number;
  api_key?: string;
  /** 1-64 chars of [A-Za-z0-9_.:-]; the server echoes it in every frame answering this request */
  request_id?: string;
}

export type FrameType = "updated_response" | "completed_response" | "error" | "oom_response";

/**
 * Where a frame's suggestions come from: "hit" the stored cache (one completed_response), "join" an
 * identical generation already running, "miss" generated now (and stored), "off" not cacheable.
 */
export type CacheOutcome = "hit" | "join" | "miss" | "off";

export interface FrameError {
  code: string;
  message: string;
  field: string | null;
}

/** One parsed server frame. */
export interface Frame {
  type: FrameType;
  prompt: string;
  /** text_0 .. text_{n-1}; for error / oom frames these are the server's human text, not suggestions. */
  texts: string[];
  modelName?: string;
  cacheKey?: string | null;
  /** the request_id echoed: undefined when the frame has no request_id key (an older server), null when the request had none */
  requestId?: string | null;
  /** absent on older servers */
  cache?: CacheOutcome;
  seed?: number;
  length?: number;
  completed?: number;
  /** a completed_response answering a cancel_request */
  cancelled: boolean;
  /** set on error frames (and on oom_response, made up from its text) */
  error?: FrameError;
}
