// @vitest-environment jsdom
// The protocol client against a real writeup-server (jsdom's WebSocket). Skipped unless
// WRITEUP_LIVE_URL names one, e.g.
//   writeup-server --port 18931 --model tiny-gpt2=tests/data/tiny-gpt2 --redis none &
//   WRITEUP_LIVE_URL=http://127.0.0.1:18931 npx vitest run src/protocol/client.live.test.ts
import { describe, expect, it } from "vitest";
import { WriteupClient, type SuggestionUpdate } from "./client";
import type { FrameError } from "./types";
import { writeupSocketUrl } from "./url";

const live = process.env.WRITEUP_LIVE_URL;

describe.skipIf(!live)("WriteupClient against writeup-server", () => {
  const base = { temperature: 0.7, top_k: 10, top_p: 0, length: 12, batch_size: 3, model_name: "tiny-gpt2" };

  function connect() {
    const updates: SuggestionUpdate[] = [];
    const errors: FrameError[] = [];
    let opened!: () => void;
    const open = new Promise<void>((r) => (opened = r));
    const url = new URL(live as string);
    const client = new WriteupClient({
      url: writeupSocketUrl({ protocol: url.protocol, host: url.host }, "vitest-live"),
      events: {
        onState: (s) => s === "open" && opened(),
        onUpdate: (u) => updates.push(u),
        onError: (_id, e) => errors.push(e),
      },
    });
    client.connect();
    return { client, updates, errors, open };
  }

  async function until(cond: () => boolean, ms = 10000) {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(cond()).toBe(true);
  }

  it("streams a request to its completion", async () => {
    const c = connect();
    await c.open;
    const id = c.client.request({ ...base, prompt: "It was a dark and stormy night" });
    await until(() => c.updates.some((u) => u.done));
    expect(c.updates.every((u) => u.id === id && u.texts.length === 3)).toBe(true);
    expect(c.updates.at(-1)?.frame.type).toBe("completed_response");
    c.client.close();
  });

  it("a superseding request gets only its own frames", async () => {
    const c = connect();
    await c.open;
    c.client.request({ ...base, prompt: "first prompt about the sea", length: 40 });
    const second = c.client.request({ ...base, prompt: "second prompt about the hills" });
    await until(() => c.updates.some((u) => u.done));
    expect(c.updates.every((u) => u.id === second && u.frame.prompt === "second prompt about the hills")).toBe(true);
    c.client.close();
  });

  it("two requests differing only in temperature: only the second one's frames arrive", async () => {
    const c = connect();
    await c.open;
    c.client.request({ ...base, prompt: "the same prompt twice", length: 40, temperature: 0.5 });
    const second = c.client.request({ ...base, prompt: "the same prompt twice", length: 40, temperature: 0.9 });
    await until(() => c.updates.some((u) => u.done));
    expect(c.updates.every((u) => u.id === second)).toBe(true);
    // a server with request_id echoes it (an older one sends no key at all): every frame shown is the second's
    if (c.updates.at(-1)?.frame.requestId !== undefined) {
      for (const u of c.updates) expect(u.frame.requestId).toMatch(/^[A-Za-z0-9_.:-]{1,62}-2$/);
    }
    c.client.close();
  });

  it("a seeded request asked again comes from the cache (servers that say so)", async () => {
    const c = connect();
    await c.open;
    const ask = { ...base, prompt: `cache me ${Date.now()}`, seed: 7 };
    c.client.request(ask);
    await until(() => c.updates.some((u) => u.done));
    const first = c.updates.at(-1);
    c.updates.length = 0;
    c.client.request(ask);
    await until(() => c.updates.some((u) => u.done));
    if (first?.frame.cache !== undefined) {
      expect(first.frame.cache).toBe("miss");
      expect(c.updates.map((u) => [u.done, u.frame.cache])).toEqual([[true, "hit"]]);
      expect(c.updates[0].texts).toEqual(first.texts);
    }
    c.client.close();
  });

  it("reports a server error as an error and a lone surrogate prompt still matches", async () => {
    const c = connect();
    await c.open;
    c.client.request({ ...base, prompt: "too long", length: 200 });
    await until(() => c.errors.length === 1);
    expect(c.errors[0].field).toBe("length");
    expect(c.updates).toEqual([]);
    c.client.request({ ...base, prompt: "\ude00 smile and \ud83d\ude00" });
    await until(() => c.updates.some((u) => u.done));
    c.client.close();
  });
});
