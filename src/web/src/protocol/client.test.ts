import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WriteupClient, type ClientEvents, type SocketLike, type SuggestionUpdate } from "./client";
import type { FrameError, WriteupRequest } from "./types";

class FakeSocket implements SocketLike {
  readyState = 0;
  sent: unknown[] = [];
  closed = false;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {}
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.closed = true;
  }
  serverOpens() {
    this.readyState = 1;
    this.onopen?.({});
  }
  serverSends(message: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify({ message }) });
  }
  serverDrops() {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({});
  }
}

const base: WriteupRequest = { prompt: "It was a dark", temperature: 0.7, top_k: 10, top_p: 0, length: 10, batch_size: 2 };

function frame(type: string, prompt: string, texts: string[], extra: Record<string, unknown> = {}) {
  const m: Record<string, unknown> = { message_type: type, prompt, length: 10, seed: 42, model_name: "tiny-gpt2", cache_key: null, ...extra };
  texts.forEach((t, i) => (m[`text_${i}`] = t));
  return m;
}

describe("WriteupClient", () => {
  let sockets: FakeSocket[];
  let updates: SuggestionUpdate[];
  let errors: { id: number; error: FrameError }[];
  let states: string[];
  let protocolErrors: string[];
  let clock: number;
  let client: WriteupClient;

  const last = () => sockets[sockets.length - 1];

  beforeEach(() => {
    vi.useFakeTimers();
    sockets = [];
    updates = [];
    errors = [];
    states = [];
    protocolErrors = [];
    clock = 1000;
    const events: ClientEvents = {
      onUpdate: (u) => updates.push(u),
      onError: (id, error) => errors.push({ id, error }),
      onState: (s) => states.push(s),
      onProtocolError: (m) => protocolErrors.push(m),
    };
    client = new WriteupClient({
      url: "ws://h/ws/async/writeup/text_generation/session/t/",
      events,
      socketFactory: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
      now: () => clock,
      random: () => 1,
      requestIdPrefix: "t",
    });
    client.connect();
  });
  afterEach(() => {
    client.close();
    vi.useRealTimers();
  });

  it("sends a request made before the socket opened once it opens", () => {
    client.request(base);
    expect(last().sent).toEqual([]);
    last().serverOpens();
    expect(last().sent).toEqual([{ message_type: "new_request", ...base, request_id: "t-1" }]);
    expect(states).toEqual(["connecting", "open"]);
  });

  it("streams updates, then completes, with latencies", () => {
    last().serverOpens();
    const id = client.request(base);
    clock += 30;
    last().serverSends(frame("updated_response", base.prompt, ["a", "b"]));
    clock += 70;
    last().serverSends(frame("completed_response", base.prompt, ["a b", "b c"]));
    expect(updates.map((u) => [u.id, u.texts, u.done])).toEqual([[id, ["a", "b"], false], [id, ["a b", "b c"], true]]);
    expect(updates[1].firstFrameMs).toBe(30);
    expect(updates[1].elapsedMs).toBe(100);
    expect(client.runningId).toBeNull();
    // anything after completion is stale
    last().serverSends(frame("updated_response", base.prompt, ["x", "y"]));
    expect(updates).toHaveLength(2);
  });

  it("drops the superseded request's frames", () => {
    last().serverOpens();
    client.request(base);
    const second = client.request({ ...base, prompt: "It was a dark and" });
    last().serverSends(frame("updated_response", base.prompt, ["old", "old"]));
    last().serverSends(frame("updated_response", "It was a dark and", ["new", "new"]));
    expect(updates.map((u) => [u.id, u.texts[0]])).toEqual([[second, "new"]]);
  });

  it("sends a fresh request_id with every new_request", () => {
    last().serverOpens();
    client.request(base);
    client.request(base);
    client.request({ ...base, temperature: 0.9 });
    const ids = last().sent.map((f) => (f as { request_id: string }).request_id);
    expect(ids).toEqual(["t-1", "t-2", "t-3"]);
  });

  it("makes request_ids the server accepts, with a random prefix per client", () => {
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const s: FakeSocket[] = [];
      const c = new WriteupClient({ url: "ws://h/", events: {}, socketFactory: (u) => (s.push(new FakeSocket(u)), s[0]) });
      c.connect();
      s[0].serverOpens();
      c.request(base);
      ids.push((s[0].sent[0] as { request_id: string }).request_id);
      c.close();
    }
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_.:-]{1,64}$/);
    expect(ids[0]).not.toBe(ids[1]);
  });

  describe("with a server that echoes request_id", () => {
    it("drops the late frames of a request that differed only in temperature", () => {
      last().serverOpens();
      client.request({ ...base, temperature: 0.7 }); // t-1
      const second = client.request({ ...base, temperature: 0.9 }); // t-2
      // the old request's frames echo exactly what the new one's do, but for its request_id
      last().serverSends(frame("updated_response", base.prompt, ["old", "old"], { request_id: "t-1", cache: "miss" }));
      last().serverSends(frame("completed_response", base.prompt, ["old", "old"], { request_id: "t-1", cancelled: true }));
      last().serverSends(frame("updated_response", base.prompt, ["new", "new"], { request_id: "t-2", cache: "miss" }));
      last().serverSends(frame("completed_response", base.prompt, ["new!", "new!"], { request_id: "t-2", cache: "miss" }));
      expect(updates.map((u) => [u.id, u.texts[0], u.done, u.frame.cache])).toEqual([
        [second, "new", false, "miss"],
        [second, "new!", true, "miss"],
      ]);
    });

    it("ignores an error frame for the old request", () => {
      last().serverOpens();
      client.request(base);
      const second = client.request({ ...base, top_k: 20 });
      last().serverSends({ message_type: "error", prompt: base.prompt, text_0: "Error: busy", text_1: "", request_id: "t-1",
                           error: { code: "overloaded", message: "busy", field: null } });
      expect(errors).toEqual([]);
      expect(client.runningId).toBe(second);
      last().serverSends({ message_type: "error", prompt: base.prompt, text_0: "Error: busy", text_1: "", request_id: "t-2",
                           error: { code: "overloaded", message: "busy", field: null } });
      expect(errors).toEqual([{ id: second, error: { code: "overloaded", message: "busy", field: null } }]);
    });

    it("drops a frame whose request_id is null, naming an error in the console", () => {
      last().serverOpens();
      client.request(base);
      last().serverSends(frame("updated_response", base.prompt, ["a", "b"], { request_id: null }));
      last().serverSends({ message_type: "error", prompt: "", text_0: "Error: x", request_id: null, error: { code: "invalid_json", message: "x", field: null } });
      expect(updates).toEqual([]);
      expect(errors).toEqual([]);
      expect(protocolErrors).toEqual(["error for no request: x"]);
      expect(client.runningId).not.toBeNull();
    });

    it("matches by request_id alone, even when an echoed field differs", () => {
      last().serverOpens();
      client.request(base);
      // e.g. a server that echoes the prompt differently: the id decides
      last().serverSends(frame("updated_response", "something else", ["a", "b"], { request_id: "t-1" }));
      expect(updates).toHaveLength(1);
    });

    it("drops frames of the first send after a reconnect resent the request under a new id", () => {
      last().serverOpens();
      const id = client.request(base);
      last().serverDrops();
      vi.advanceTimersByTime(500);
      last().serverOpens();
      last().serverSends(frame("updated_response", base.prompt, ["old", "old"], { request_id: "t-1" }));
      last().serverSends(frame("updated_response", base.prompt, ["new", "new"], { request_id: "t-2" }));
      expect(updates.map((u) => [u.id, u.texts[0]])).toEqual([[id, "new"]]);
    });
  });

  it("without a request_id key (older server), two requests differing only in temperature cannot be told apart", () => {
    // documents the limit of the fallback: the echoed fields are the same
    last().serverOpens();
    client.request({ ...base, temperature: 0.7 });
    const second = client.request({ ...base, temperature: 0.9 });
    last().serverSends(frame("updated_response", base.prompt, ["old?", "old?"]));
    expect(updates.map((u) => u.id)).toEqual([second]);
  });

  it("tells a same-prompt re-ask apart by its seed (more like this)", () => {
    last().serverOpens();
    client.request({ ...base, seed: 1 });
    const again = client.request({ ...base, seed: 2 });
    last().serverSends(frame("updated_response", base.prompt, ["s1", "s1"], { seed: 1 }));
    last().serverSends(frame("updated_response", base.prompt, ["s2", "s2"], { seed: 2 }));
    expect(updates.map((u) => [u.id, u.texts[0]])).toEqual([[again, "s2"]]);
  });

  it("tells a same-prompt request apart by batch size and length", () => {
    last().serverOpens();
    client.request(base);
    client.request({ ...base, batch_size: 3, length: 20 });
    last().serverSends(frame("updated_response", base.prompt, ["a", "b"]));
    expect(updates).toEqual([]);
    last().serverSends(frame("updated_response", base.prompt, ["a", "b", "c"], { length: 20 }));
    expect(updates).toHaveLength(1);
  });

  it("cancel sends cancel_request and drops what follows, the cancelled frame included", () => {
    last().serverOpens();
    client.request(base);
    client.cancel();
    expect(last().sent[1]).toEqual({ message_type: "cancel_request" });
    last().serverSends(frame("updated_response", base.prompt, ["a", "b"]));
    last().serverSends(frame("completed_response", base.prompt, ["a", "b"], { cancelled: true }));
    expect(updates).toEqual([]);
    expect(client.runningId).toBeNull();
  });

  it("a cancel before the socket opened sends nothing", () => {
    client.request(base);
    client.cancel();
    last().serverOpens();
    expect(last().sent).toEqual([]);
  });

  it("reports error frames as errors, never as suggestions", () => {
    last().serverOpens();
    const id = client.request({ ...base, length: 200 });
    last().serverSends({ message_type: "error", prompt: base.prompt, text_0: "Error: length (200) does not fit", text_1: "",
                         error: { code: "invalid_value", message: "length (200) does not fit", field: "length" } });
    expect(updates).toEqual([]);
    expect(errors).toEqual([{ id, error: { code: "invalid_value", message: "length (200) does not fit", field: "length" } }]);
    expect(client.runningId).toBeNull();
  });

  it("matches the echo of a prompt with a lone surrogate", () => {
    last().serverOpens();
    client.request({ ...base, prompt: "\ude00 smile" });
    last().serverSends(frame("updated_response", "\ufffd smile", ["a", "b"]));
    expect(updates).toHaveLength(1);
  });

  it("reports unreadable frames and carries on", () => {
    last().serverOpens();
    client.request(base);
    last().onmessage?.({ data: "{nope" });
    last().serverSends(frame("updated_response", base.prompt, ["a", "b"]));
    expect(protocolErrors).toEqual(["frame is not valid JSON"]);
    expect(updates).toHaveLength(1);
  });

  it("reconnects with growing delays and resends the running request", () => {
    last().serverOpens();
    client.request(base);
    last().serverDrops();
    expect(states.at(-1)).toBe("reconnecting");
    expect(sockets).toHaveLength(1);
    vi.advanceTimersByTime(499);
    expect(sockets).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(2);
    last().serverDrops(); // the server is still down
    vi.advanceTimersByTime(999);
    expect(sockets).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(3);
    last().serverOpens();
    expect(states.at(-1)).toBe("open");
    // sent again under a fresh request_id
    expect(last().sent).toEqual([{ message_type: "new_request", ...base, request_id: "t-2" }]);
    // a later drop starts from the base delay again
    last().serverDrops();
    vi.advanceTimersByTime(500);
    expect(sockets).toHaveLength(4);
  });

  it("does not reconnect after close()", () => {
    last().serverOpens();
    client.close();
    expect(last().closed).toBe(true);
    vi.advanceTimersByTime(60000);
    expect(sockets).toHaveLength(1);
    expect(states.at(-1)).toBe("closed");
  });
});
