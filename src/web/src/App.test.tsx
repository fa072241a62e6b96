import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { App } from "./App";

/** A socket that never opens: the page's models list is what these tests are about. */
class IdleWebSocket {
  readyState = 0;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  send() {}
  close() {
    this.readyState = 3;
  }
}

/** GET /v1/models of a server that needs the key "sekret". */
function keyedServer() {
  return vi.fn(async (_url: string, init?: RequestInit) => {
    const auth = (init?.headers as Record<string, string> | undefined)?.Authorization;
    if (auth === "Bearer sekret") {
      return new Response(JSON.stringify({ object: "list", data: [{ id: "tiny-gpt2", aliases: [], ready: true }] }), { status: 200 });
    }
    const code = auth ? "invalid_api_key" : "missing_api_key";
    return new Response(JSON.stringify({ error: { code, message: "an API key is required", param: null } }), { status: 401 });
  });
}

beforeEach(() => {
  localStorage.clear();
  vi.stubGlobal("WebSocket", IdleWebSocket);
});
afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("App and the API key", () => {
  it("asks for the key when GET /v1/models answers 401, and entering it lists the models", async () => {
    const fetch = keyedServer();
    vi.stubGlobal("fetch", fetch);
    render(<App />);
    const alert = await screen.findByTestId("api-key-error");
    expect(alert.getAttribute("role")).toBe("alert");
    expect(alert.textContent).toBe("This server needs an API key: enter it below.");
    const input = screen.getByLabelText(/^API key/) as HTMLInputElement;
    expect(input.type).toBe("password");
    expect(input.getAttribute("autocomplete")).toBe("off");
    expect(input.getAttribute("aria-invalid")).toBe("true");
    expect(screen.queryByRole("option", { name: "tiny GPT-2" })).toBeNull();

    act(() => void fireEvent.change(input, { target: { value: "wrong" } }));
    await waitFor(() => expect(screen.getByTestId("api-key-error").textContent).toBe("The server did not accept this API key: check it below."), { timeout: 3000 });

    act(() => void fireEvent.change(input, { target: { value: "sekret" } }));
    await screen.findByRole("option", { name: "tiny GPT-2" }, { timeout: 3000 });
    expect(screen.queryByTestId("api-key-error")).toBeNull();
    expect(input.getAttribute("aria-invalid")).toBeNull();
    expect(fetch.mock.calls.at(-1)?.[1]?.headers).toMatchObject({ Authorization: "Bearer sekret" });
    expect(JSON.parse(localStorage.getItem("writeup.settings.v1") ?? "{}")).toMatchObject({ apiKey: "sekret" });
  });

  it("a stored key is sent from the first models request; a server without keys shows no key message", async () => {
    localStorage.setItem("writeup.settings.v1", JSON.stringify({ apiKey: "sekret" }));
    const fetch = keyedServer();
    vi.stubGlobal("fetch", fetch);
    render(<App />);
    await screen.findByRole("option", { name: "tiny GPT-2" });
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("other failures of the models list are not about the key", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => new Response("", { status: 503 })));
    render(<App />);
    expect((await screen.findByRole("alert")).textContent).toBe("Models could not be listed: GET /v1/models answered 503");
    expect(screen.queryByTestId("api-key-error")).toBeNull();
    expect(screen.getByLabelText(/^API key/).getAttribute("aria-invalid")).toBeNull();
  });
});
