import { backoffDelay } from "./backoff";
import { cancelRequestFrame, FrameParseError, newRequestFrame, parseFrame, toWellFormed } from "./frames";
import type { Frame, FrameError, WriteupRequest } from "./types";

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** The part of the browser WebSocket the client uses (so tests can pass a fake). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = (url: string) => SocketLike;

const OPEN = 1;

export interface SuggestionUpdate {
  /** the id request() returned */
  id: number;
  texts: string[];
  /** true on completed_response: no more frames come for this request */
  done: boolean;
  frame: Frame;
  /** ms from sending the request to its first frame */
  firstFrameMs: number;
  /** ms from sending the request to this frame */
  elapsedMs: number;
}

export interface ClientEvents {
  onState?(state: ConnectionState, detail: { attempt: number; retryInMs?: number }): void;
  onUpdate?(update: SuggestionUpdate): void;
  /** an error for a request (error / oom frames, a lost connection); never a suggestion */
  onError?(id: number, error: FrameError): void;
  /** a frame that could not be read (logged, not shown as a suggestion) */
  onProtocolError?(message: string): void;
}

export interface ClientOptions {
  url: string | (() => string);
  events: ClientEvents;
  socketFactory?: SocketFactory;
  now?: () => number;
  random?: () => number;
  /** the start of every request_id this client sends (default: random, so unique per page load) */
  requestIdPrefix?: string;
}

interface Running {
  id: number;
  request: WriteupRequest;
  /** the prompt as the server echoes it (lone surrogates replaced) */
  echoPrompt: string;
  /** the request_id of the new_request last sent for it (fresh for each one sent) */
  requestId: string;
  sentAt: number;
  firstFrameAt?: number;
  sent: boolean;
}

/** 8 random base-36 characters (crypto when there is one: it needs no secure context). */
function randomPrefix(): string {
  const bytes = new Uint8Array(8);
  if (typeof globalThis.crypto?.getRandomValues === "function") globalThis.crypto.getRandomValues(bytes);
  else bytes.forEach((_, i) => (bytes[i] = Math.floor(Math.random() * 256)));
  return Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

/**
 * One writeup WebSocket with at most one running request. A new request supersedes the running
 * one (the server cancels it); frames that do not answer the running request are dropped. Every
 * new_request carries a fresh request_id; a frame with a request_id key answers the running request
 * only when it echoes that id. A frame without the key (an older server) is matched on what it
 * echoes instead: prompt, batch size, length, and model / seed when the request named them.
 * The socket reconnects with exponential backoff; a request still running when the socket dropped
 * is sent again once it is back.
 */
export class WriteupClient {
  private socket: SocketLike | null = null;
  private state: ConnectionState = "closed";
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = true;
  private nextId = 1;
  private nextSend = 1;
  private readonly idPrefix: string;
  private running: Running | null = null;
  private readonly factory: SocketFactory;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly options: ClientOptions) {
    this.factory = options.socketFactory ?? ((url) => new WebSocket(url) as unknown as SocketLike);
    this.now = options.now ?? (() => performance.now());
    this.random = options.random ?? Math.random;
    this.idPrefix = options.requestIdPrefix ?? randomPrefix();
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  get runningId(): number | null {
    return this.running?.id ?? null;
  }

  connect(): void {
    this.stopped = false;
    if (this.socket) return;
    this.open();
  }

  /** Closes the socket for good (no reconnect). */
  close(): void {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.running = null;
    const s = this.socket;
    this.socket = null;
    if (s) {
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      s.close(1000, "closed by the editor");
    }
    this.setState("closed");
  }

  /** Sends a new_request, superseding the running one; returns its id. */
  request(request: WriteupRequest): number {
    const id = this.nextId++;
    this.running = { id, request, echoPrompt: toWellFormed(request.prompt), requestId: "", sentAt: this.now(), sent: false };
    this.flush();
    return id;
  }

  /** Cancels the running request (cancel_request); its later frames are dropped. */
  cancel(): void {
    if (!this.running) return;
    const wasSent = this.running.sent;
    this.running = null;
    if (wasSent && this.socket?.readyState === OPEN) this.socket.send(cancelRequestFrame());
  }

  private flush(): void {
    const r = this.running;
    if (!r || r.sent || !this.socket || this.socket.readyState !== OPEN) return;
    r.sentAt = this.now();
    r.firstFrameAt = undefined;
    r.sent = true;
    r.requestId = `${this.idPrefix}-${this.nextSend++}`;
    this.socket.send(newRequestFrame({ ...r.request, request_id: r.requestId }));
  }

  private open(): void {
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const url = typeof this.options.url === "function" ? this.options.url() : this.options.url;
    let socket: SocketLike;
    try {
      socket = this.factory(url);
    } catch (e) {
      this.options.events.onProtocolError?.(`cannot open ${url}: ${String(e)}`);
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.setState("open");
      this.flush();
    };
    socket.onmessage = (ev) => this.onMessage(ev.data);
    socket.onerror = () => {
      // a close event follows; reconnecting happens there
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.running) this.running.sent = false; // sent again after reconnecting
      if (!this.stopped) this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.attempt, this.random);
    this.attempt++;
    this.setState("reconnecting", delay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.stopped) this.open();
    }, delay);
  }

  private setState(state: ConnectionState, retryInMs?: number): void {
    this.state = state;
    this.options.events.onState?.(state, { attempt: this.attempt, retryInMs });
  }

  private answersRunning(frame: Frame): boolean {
    const r = this.running;
    if (!r || !r.sent || frame.cancelled) return false;
    if (frame.requestId !== undefined) return frame.requestId === r.requestId;
    // an older server echoes no request_id: match on what it does echo
    if (frame.prompt !== r.echoPrompt) return false;
    if (frame.type === "error" || frame.type === "oom_response") return true; // they echo only the prompt
    if (frame.texts.length !== r.request.batch_size) return false;
    if (frame.length !== undefined && frame.length !== r.request.length) return false;
    if (r.request.model_name && frame.modelName !== undefined && frame.modelName !== r.request.model_name) return false;
    if (r.request.seed !== undefined && frame.seed !== undefined && frame.seed !== r.request.seed) return false;
    return true;
  }

  private onMessage(data: unknown): void {
    if (typeof data !== "string") {
      this.options.events.onProtocolError?.("binary frame ignored");
      return;
    }
    let frame: Frame;
    try {
      frame = parseFrame(data);
    } catch (e) {
      this.options.events.onProtocolError?.(e instanceof FrameParseError ? e.message : String(e));
      return;
    }
    if (!this.answersRunning(frame)) {
      // stale: a superseded or cancelled request. An error that names no request cannot be ours
      // (every new_request carries an id), but it is worth a line in the console.
      if (frame.error && frame.requestId === null) this.options.events.onProtocolError?.(`error for no request: ${frame.error.message}`);
      return;
    }
    const r = this.running as Running;
    const now = this.now();
    if (frame.error) {
      this.running = null;
      this.options.events.onError?.(r.id, frame.error);
      return;
    }
    r.firstFrameAt ??= now;
    const done = frame.type === "completed_response";
    if (done) this.running = null;
    this.options.events.onUpdate?.({
      id: r.id,
      texts: frame.texts,
      done,
      frame,
      firstFrameMs: r.firstFrameAt - r.sentAt,
      elapsedMs: now - r.sentAt,
    });
  }
}
