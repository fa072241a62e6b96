import { act, cleanup, renderHook } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_SETTINGS } from "../settings";
import { useSuggestions } from "./useSuggestions";

class FakeWebSocket {
  static all: FakeWebSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {
    FakeWebSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  frame(message: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify({ message }) });
  }
}

const live = () => FakeWebSocket.all.filter((s) => s.readyState !== 3).at(-1) as FakeWebSocket;

beforeEach(() => {
  FakeWebSocket.all = [];
  vi.stubGlobal("WebSocket", FakeWebSocket);
});
afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("useSuggestions", () => {
  const settings = { ...DEFAULT_SETTINGS, batchSize: 3, length: 8, model: "tiny-gpt2" };

  it("opens the page's same-origin socket and asks with the settings and the prompt window", () => {
    const { result } = renderHook(() => useSuggestions(settings));
    expect(live().url).toMatch(/^ws:\/\/[^/]*\/ws\/async\/writeup\/text_generation\/session\/[a-z0-9-]+\/$/);
    act(() => live().open());
    expect(result.current.connection).toBe("open");
    act(() => result.current.ask("x".repeat(600) + " It was"));
    expect(live().sent).toEqual([{ message_type: "new_request", prompt: "x".repeat(493) + " It was", temperature: 0.7,
                                   top_k: 10, top_p: 0, length: 8, batch_size: 3, model_name: "tiny-gpt2",
                                   request_id: expect.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/) as unknown }]);
    expect(result.current.waiting).toBe(true);
  });

  it("sends the API key as api_key in every new_request when one is set, and none otherwise", () => {
    const { result, rerender } = renderHook((s: typeof settings) => useSuggestions(s), { initialProps: settings });
    act(() => live().open());
    act(() => result.current.ask("It was"));
    expect(live().sent[0]).not.toHaveProperty("api_key");
    rerender({ ...settings, apiKey: " sekret\n" });
    act(() => result.current.ask("It was a"));
    act(() => result.current.ask("It was a dark"));
    expect(live().sent.map((f) => f.api_key)).toEqual([undefined, "sekret", "sekret"]);
  });

  it("shows streamed suggestions without the blank ones, then completes", () => {
    const { result } = renderHook(() => useSuggestions(settings));
    act(() => live().open());
    act(() => result.current.ask("It was"));
    const base = { prompt: "It was", length: 8, model_name: "tiny-gpt2", seed: 42 };
    act(() => live().frame({ message_type: "updated_response", ...base, text_0: "a dark", text_1: "", text_2: "the" }));
    expect(result.current.view).toMatchObject({ texts: ["a dark", "the"], streaming: true });
    act(() => live().frame({ message_type: "completed_response", ...base, text_0: "a dark night", text_1: "so", text_2: "the end" }));
    expect(result.current.view).toMatchObject({ texts: ["a dark night", "so", "the end"], streaming: false });
    expect(result.current.waiting).toBe(false);
  });

  it("shows where the suggestions come from (the frame's cache) and only the running request's frames", () => {
    const { result } = renderHook(() => useSuggestions(settings));
    act(() => live().open());
    act(() => result.current.ask("It was"));
    act(() => result.current.ask("It was")); // asked again, e.g. with another temperature
    const [first, second] = live().sent.map((f) => f.request_id as string);
    expect(first).not.toBe(second);
    const base = { prompt: "It was", length: 8, model_name: "tiny-gpt2", seed: 42 };
    act(() => live().frame({ message_type: "updated_response", ...base, request_id: first, cache: "miss", text_0: "old", text_1: "old", text_2: "old" }));
    expect(result.current.view).toBeNull();
    act(() => live().frame({ message_type: "completed_response", ...base, request_id: second, cache: "hit", text_0: "a", text_1: "b", text_2: "c" }));
    expect(result.current.view).toMatchObject({ texts: ["a", "b", "c"], streaming: false, cache: "hit" });
  });

  it("takes control characters out of suggestions; one left empty is dropped", () => {
    const { result } = renderHook(() => useSuggestions(settings));
    act(() => live().open());
    act(() => result.current.ask("It was"));
    const request_id = live().sent[0].request_id;
    act(() => live().frame({ message_type: "completed_response", prompt: "It was", length: 8, model_name: "tiny-gpt2", seed: 42, request_id,
                             text_0: "squad\u0019ih", text_1: "\u0007\u0008", text_2: "a\nb" }));
    expect(result.current.view?.texts).toEqual(["squadih", "a\nb"]);
  });

  it("an error replaces the suggestions and is not one of them", () => {
    const { result } = renderHook(() => useSuggestions(settings));
    act(() => live().open());
    act(() => result.current.ask("It was"));
    act(() => live().frame({ message_type: "error", prompt: "It was", text_0: "Error: bad", text_1: "", text_2: "",
                             error: { code: "invalid_value", message: "bad", field: "length" } }));
    expect(result.current.view).toBeNull();
    expect(result.current.error).toEqual({ code: "invalid_value", message: "bad", field: "length" });
  });

  it("dismiss cancels the running request and a blank prompt asks nothing", () => {
    const { result } = renderHook(() => useSuggestions(settings));
    act(() => live().open());
    act(() => result.current.ask("It was"));
    act(() => result.current.dismiss());
    expect(live().sent.at(-1)).toEqual({ message_type: "cancel_request" });
    act(() => result.current.ask("   \n "));
    expect(live().sent).toHaveLength(2);
    expect(result.current.waiting).toBe(false);
  });
});
