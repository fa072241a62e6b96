import { describe, expect, it } from "vitest";
import { modelChoices, parseModels, readableName } from "./api/models";
import { insertionText, textToValue, valueToText, wordCount } from "./editor/document";
import { DEFAULT_SETTINGS, loadSettings, sanitizeSettings, saveSettings } from "./settings";

class MemoryStorage {
  private m = new Map<string, string>();
  get length() { return this.m.size; }
  clear() { this.m.clear(); }
  getItem(k: string) { return this.m.get(k) ?? null; }
  key(i: number) { return [...this.m.keys()][i] ?? null; }
  removeItem(k: string) { this.m.delete(k); }
  setItem(k: string, v: string) { this.m.set(k, v); }
}

describe("models", () => {
  const answer = { object: "list", data: [
    { id: "tiny-gpt2", aliases: [], ready: true, context_length: 64, object: "model" },
    { id: "gpt2-medium", aliases: ["medium"], ready: false, notice: "random weights: suggestions are noise" },
    { nope: 1 },
  ] };
  it("reads GET /v1/models and skips entries without an id", () => {
    const m = parseModels(answer);
    expect(m.map((x) => x.id)).toEqual(["tiny-gpt2", "gpt2-medium"]);
    expect(m[0].contextLength).toBe(64);
    expect(m[1].ready).toBe(false);
    expect(m[1].notice).toContain("random weights");
  });
  it("offers every model and alias with a readable name", () => {
    const c = modelChoices(parseModels(answer));
    expect(c.map((x) => [x.name, x.label])).toEqual([
      ["tiny-gpt2", "tiny GPT-2"], ["gpt2-medium", "GPT-2 medium"], ["medium", "medium (= gpt2-medium)"]]);
    expect(readableName("gpt-2")).toBe("GPT-2");
  });
  it("rejects an answer without a data list", () => {
    expect(() => parseModels({ error: {} })).toThrow("no \"data\" list");
  });
});

describe("settings", () => {
  it("clamps stored values to the protocol's ranges and defaults the rest", () => {
    expect(sanitizeSettings({ length: 9999, temperature: 0, topK: 41.4, topP: "x", batchSize: 0, seed: 7.6, model: "m" }))
      .toEqual({ model: "m", length: 256, temperature: 0.1, topK: 40, topP: 0, batchSize: 1, seed: 8 });
    expect(sanitizeSettings(null)).toEqual(DEFAULT_SETTINGS);
  });
  it("round-trips through storage and survives garbage", () => {
    const s = new MemoryStorage();
    saveSettings({ ...DEFAULT_SETTINGS, batchSize: 5, seed: 3 }, s);
    expect(loadSettings(s)).toEqual({ ...DEFAULT_SETTINGS, batchSize: 5, seed: 3 });
    s.setItem("writeup.settings.v1", "{broken");
    expect(loadSettings(s)).toEqual(DEFAULT_SETTINGS);
  });
});

describe("document", () => {
  it("keeps paragraphs through Slate's value", () => {
    expect(valueToText(textToValue("one\n\ntwo 😀"))).toBe("one\n\ntwo 😀");
  });
  it("counts words", () => {
    expect(wordCount("  It was a\ndark night ")).toBe(5);
    expect(wordCount("")).toBe(0);
  });
  it("puts a space before an inserted suggestion only when needed", () => {
    expect(insertionText("It was", "a dark")).toBe(" a dark");
    expect(insertionText("It was ", " a dark")).toBe("a dark");
    expect(insertionText("", "Once")).toBe("Once");
  });
});
