import { describe, expect, it, vi } from "vitest";
import { apiKeyMessage, apiKeyProblem } from "./api/apiKey";
import { fetchModels, modelChoices, ModelsError, parseModels, readableName } from "./api/models";
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

describe("models fetch and the API key", () => {
  type FetchMock = ReturnType<typeof vi.fn<typeof fetch>>;
  const ok = () => new Response(JSON.stringify({ object: "list", data: [{ id: "tiny-gpt2", aliases: [] }] }), { status: 200 });
  const refused = (code: string) => new Response(JSON.stringify({ error: { code, message: "no", param: null } }), { status: 401 });
  const headersOf = (f: FetchMock) => (f.mock.calls[0][1] as RequestInit).headers as Record<string, string>;

  it("sends no Authorization header without a key (nor with a blank one)", async () => {
    for (const key of [undefined, "", "  \n"]) {
      const f: FetchMock = vi.fn(async () => ok());
      expect((await fetchModels(key, f)).map((m) => m.id)).toEqual(["tiny-gpt2"]);
      expect(f.mock.calls[0][0]).toBe("/v1/models");
      expect(headersOf(f)).toEqual({ Accept: "application/json" });
    }
  });
  it("sends the key as a Bearer header, without surrounding white space", async () => {
    const f: FetchMock = vi.fn(async () => ok());
    await fetchModels(" sekret-1\n", f);
    expect(headersOf(f)).toEqual({ Accept: "application/json", Authorization: "Bearer sekret-1" });
  });
  it("a 401 throws a ModelsError with the server's code", async () => {
    const missing = await fetchModels("", vi.fn(async () => refused("missing_api_key"))).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ModelsError);
    expect(missing).toMatchObject({ status: 401, code: "missing_api_key" });
    await expect(fetchModels("wrong", vi.fn(async () => refused("invalid_api_key")))).rejects.toMatchObject({ code: "invalid_api_key" });
    // a 401 without a readable body is still about the key
    await expect(fetchModels("", vi.fn(async () => new Response("nope", { status: 401 })))).rejects.toMatchObject({ code: "missing_api_key" });
    await expect(fetchModels("k", vi.fn(async () => new Response("", { status: 401 })))).rejects.toMatchObject({ code: "invalid_api_key" });
    await expect(fetchModels("", vi.fn(async () => new Response("", { status: 503 })))).rejects.toMatchObject({ status: 503, code: null });
  });
  it("a key a header cannot carry is refused before anything is sent", async () => {
    const f = vi.fn(async () => ok());
    await expect(fetchModels("clé", f)).rejects.toMatchObject({ code: "invalid_api_key", message: expect.stringContaining("printable ASCII") as unknown });
    expect(f).not.toHaveBeenCalled();
  });
  it("the key codes become a message asking for the key", () => {
    expect(apiKeyProblem("missing_api_key")).toBe("missing");
    expect(apiKeyProblem("invalid_api_key")).toBe("invalid");
    expect(apiKeyProblem("invalid_value")).toBeNull();
    expect(apiKeyMessage("missing")).toBe("This server needs an API key: enter it in the settings.");
    expect(apiKeyMessage("invalid")).toBe("The server did not accept this API key: check it in the settings.");
    expect(apiKeyMessage("missing", "below")).toBe("This server needs an API key: enter it below.");
  });
});

describe("settings", () => {
  it("clamps stored values to the protocol's ranges and defaults the rest", () => {
    expect(sanitizeSettings({ length: 9999, temperature: 0, topK: 41.4, topP: "x", batchSize: 0, seed: 7.6, model: "m" }))
      .toEqual({ model: "m", length: 256, temperature: 0.1, topK: 40, topP: 0, batchSize: 1, seed: 8, apiKey: "" });
    expect(sanitizeSettings({ apiKey: "k-1" }).apiKey).toBe("k-1");
    expect(sanitizeSettings({ apiKey: 7 }).apiKey).toBe("");
    expect(sanitizeSettings(null)).toEqual(DEFAULT_SETTINGS);
  });
  it("round-trips through storage and survives garbage", () => {
    const s = new MemoryStorage();
    saveSettings({ ...DEFAULT_SETTINGS, batchSize: 5, seed: 3, apiKey: "sekret" }, s);
    expect(loadSettings(s)).toEqual({ ...DEFAULT_SETTINGS, batchSize: 5, seed: 3, apiKey: "sekret" });
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
