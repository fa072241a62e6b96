import { describe, expect, it } from "vitest";
import { cancelRequestFrame, cleanSuggestion, FrameParseError, newRequestFrame, parseFrame, promptWindow, toWellFormed } from "./frames";

const wrap = (m: Record<string, unknown>) => JSON.stringify({ message: m });

describe("new_request / cancel_request", () => {
  it("sends the protocol's fields and leaves unset ones out", () => {
    const j = JSON.parse(newRequestFrame({ prompt: "It was", temperature: 0.7, top_k: 10, top_p: 0, length: 40, batch_size: 3 }));
    expect(j).toEqual({ message_type: "new_request", prompt: "It was", temperature: 0.7, top_k: 10, top_p: 0, length: 40, batch_size: 3 });
  });
  it("names the model and seed when given", () => {
    const j = JSON.parse(newRequestFrame({ prompt: "a", temperature: 1, top_k: 0, top_p: 0.9, length: 5, batch_size: 1, model_name: "gpt2", seed: 7 }));
    expect(j.model_name).toBe("gpt2");
    expect(j.seed).toBe(7);
  });
  it("carries the request_id when given", () => {
    const j = JSON.parse(newRequestFrame({ prompt: "a", temperature: 1, top_k: 0, top_p: 0, length: 5, batch_size: 1, request_id: "k3x.7" }));
    expect(j.request_id).toBe("k3x.7");
  });
  it("cancel_request is just its type", () => {
    expect(JSON.parse(cancelRequestFrame())).toEqual({ message_type: "cancel_request" });
  });
});

describe("parseFrame", () => {
  it("reads an updated_response with its texts and extras", () => {
    const f = parseFrame(wrap({ message_type: "updated_response", prompt: "p", text_0: "a", text_1: "b", model_name: "tiny", cache_key: "k", seed: 42, length: 10, completed: 3 }));
    expect(f).toMatchObject({ type: "updated_response", prompt: "p", texts: ["a", "b"], modelName: "tiny", cacheKey: "k", seed: 42, length: 10, completed: 3, cancelled: false });
    expect(f.error).toBeUndefined();
  });
  it("reads request_id and cache, and tells an absent request_id key from a null one", () => {
    const f = parseFrame(wrap({ message_type: "completed_response", prompt: "p", text_0: "a", request_id: "r.1", cache: "hit" }));
    expect(f.requestId).toBe("r.1");
    expect(f.cache).toBe("hit");
    const none = parseFrame(wrap({ message_type: "error", prompt: "p", text_0: "Error: x", request_id: null }));
    expect(none.requestId).toBeNull();
    const old = parseFrame(wrap({ message_type: "updated_response", prompt: "p", text_0: "a" }));
    expect("requestId" in old).toBe(false);
    expect(old.cache).toBeUndefined();
  });
  it("ignores a cache value it does not know", () => {
    expect(parseFrame(wrap({ message_type: "updated_response", prompt: "p", text_0: "a", cache: "maybe" })).cache).toBeUndefined();
  });
  it("reads a cancelled completed_response", () => {
    const f = parseFrame(wrap({ message_type: "completed_response", prompt: "p", text_0: "", cancelled: true, cache_key: null }));
    expect(f.cancelled).toBe(true);
    expect(f.cacheKey).toBeNull();
  });
  it("turns an error frame into an error, not a suggestion text", () => {
    const f = parseFrame(wrap({ message_type: "error", prompt: "", text_0: "Error: prompt must not be blank", text_1: "", error: { code: "invalid_value", message: "prompt must not be blank", field: "prompt" } }));
    expect(f.error).toEqual({ code: "invalid_value", message: "prompt must not be blank", field: "prompt" });
  });
  it("makes an error of an oom_response", () => {
    const f = parseFrame(wrap({ message_type: "oom_response", prompt: "p", text_0: "The server ran out of memory" }));
    expect(f.error?.code).toBe("out_of_memory");
  });
  it.each([
    ["not json", "frame is not valid JSON"],
    ["[1]", "frame has no \"message\" object"],
    [wrap({ message_type: "hello" }), "unknown message_type \"hello\""],
    [wrap({ message_type: "updated_response", text_0: 5 }), "text_0 is not a string"],
    [wrap({ message_type: "updated_response", text_0: "a", request_id: 5 }), "request_id is not a string or null"],
  ])("rejects %s", (data, message) => {
    expect(() => parseFrame(data)).toThrow(FrameParseError);
    expect(() => parseFrame(data)).toThrow(message);
  });
});

describe("cleanSuggestion", () => {
  it("takes control characters out and keeps tabs, newlines and everything printable", () => {
    expect(cleanSuggestion("squadatures\u0019ih <136")).toBe("squadaturesih <136");
    expect(cleanSuggestion("a\u0000b\u001bc\u007fd\u0085e\rf")).toBe("abcdef");
    expect(cleanSuggestion("line\n\tnext \ufffd \u58eb 😀")).toBe("line\n\tnext \ufffd \u58eb 😀");
  });
});

describe("prompt text", () => {
  it("replaces lone surrogates and keeps pairs", () => {
    expect(toWellFormed("a\ud83d\ude00b")).toBe("a\ud83d\ude00b");
    expect(toWellFormed("\ude00x\ud83d")).toBe("\ufffdx\ufffd");
    expect(toWellFormed("plain")).toBe("plain");
  });
  it("keeps the last 500 units and never starts inside a pair", () => {
    const doc = "x".repeat(600);
    expect(promptWindow(doc)).toBe("x".repeat(500));
    const emoji = "\ud83d\ude00";
    // the window's first unit would be the low half of the emoji
    const cut = "y" + emoji + "z".repeat(499);
    expect(promptWindow(cut)).toBe("z".repeat(499));
    expect(promptWindow(emoji + "ab", 3)).toBe("ab");
  });
});
