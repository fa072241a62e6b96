import { describe, expect, it } from "vitest";
import { backoffDelay } from "./backoff";
import { newSessionId, writeupSocketUrl } from "./url";

describe("writeupSocketUrl", () => {
  it("uses ws on http and the page's host and port", () => {
    expect(writeupSocketUrl({ protocol: "http:", host: "127.0.0.1:8080" }, "s1")).toBe(
      "ws://127.0.0.1:8080/ws/async/writeup/text_generation/session/s1/");
  });
  it("uses wss behind an https proxy", () => {
    expect(writeupSocketUrl({ protocol: "https:", host: "writeup.example" }, "s1")).toBe(
      "wss://writeup.example/ws/async/writeup/text_generation/session/s1/");
  });
  it("makes session ids the route accepts", () => {
    expect(newSessionId()).toMatch(/^[A-Za-z0-9_-]{1,128}$/);
  });
});

describe("backoffDelay", () => {
  it("doubles from the base and stops at the cap", () => {
    const mid = () => 1; // no jitter taken off
    expect(backoffDelay(0, mid)).toBe(500);
    expect(backoffDelay(1, mid)).toBe(1000);
    expect(backoffDelay(3, mid)).toBe(4000);
    expect(backoffDelay(10, mid)).toBe(15000);
    expect(backoffDelay(1000, mid)).toBe(15000);
  });
  it("takes at most the jitter off", () => {
    expect(backoffDelay(0, () => 0)).toBe(400);
  });
});
