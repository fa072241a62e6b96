import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { describeCache, describeLatency, SuggestionList, type SuggestionView } from "./SuggestionList";

const done: SuggestionView = { texts: ["and the wind", "when the rain"], streaming: false, firstFrameMs: 41.6, elapsedMs: 180.2, seed: 42 };

function renderList(props: Partial<Parameters<typeof SuggestionList>[0]> = {}) {
  const handlers = { onPick: vi.fn(), onHover: vi.fn(), onMoreLikeThis: vi.fn() };
  render(<SuggestionList view={done} error={null} selected={-1} waiting={false} {...handlers} {...props} />);
  return handlers;
}

afterEach(cleanup);

describe("SuggestionList", () => {
  it("lists the suggestions as options and marks the selected one", () => {
    renderList({ selected: 1 });
    const options = screen.getAllByRole("option");
    expect(options.map((o) => o.textContent)).toEqual(["and the wind", "when the rain"]);
    expect(options[1].getAttribute("aria-selected")).toBe("true");
    expect(options[0].getAttribute("aria-selected")).toBe("false");
  });

  it("picks with a click and keeps the editor's focus (mousedown prevented)", () => {
    const h = renderList();
    const option = screen.getAllByRole("option")[1];
    expect(fireEvent.mouseDown(option)).toBe(false); // default prevented
    fireEvent.click(option);
    expect(h.onPick).toHaveBeenCalledWith(1);
  });

  it("shows an error as an alert and offers nothing to insert", () => {
    renderList({ view: null, error: { code: "invalid_value", message: "length (200) does not fit", field: "length" } });
    expect(screen.getByRole("alert").textContent).toContain("length (200) does not fit");
    expect(screen.queryAllByRole("option")).toEqual([]);
    expect(screen.getByTestId("live").textContent).toBe("Error: length (200) does not fit");
  });

  it("a key error asks for the key (not the protocol's wording), offers nothing to insert and focuses the key field", () => {
    const input = document.createElement("input");
    input.id = "api-key";
    document.body.append(input);
    renderList({ view: null, error: { code: "missing_api_key", message: "an API key is required (api_key field, query parameter or Bearer header)", field: "api_key" } });
    const alert = screen.getByRole("alert");
    expect(alert.textContent).toContain("This server needs an API key: enter it in the settings.");
    expect(alert.textContent).not.toContain("query parameter");
    expect(screen.queryAllByRole("option")).toEqual([]);
    expect(screen.getByTestId("live").textContent).toBe("Error: This server needs an API key: enter it in the settings.");
    fireEvent.click(screen.getByRole("button", { name: "Enter the key" }));
    expect(document.activeElement).toBe(input);
    input.remove();
    cleanup();
    renderList({ view: null, error: { code: "invalid_api_key", message: "an API key is required", field: "api_key" } });
    expect(screen.getByRole("alert").textContent).toContain("did not accept this API key");
  });

  it("announces the count once the suggestions are complete, not while streaming", () => {
    renderList({ view: { ...done, streaming: true } });
    expect(screen.getByTestId("live").textContent).toBe("");
    cleanup();
    renderList();
    expect(screen.getByTestId("live").textContent).toBe("2 suggestions");
  });

  it("shows the latency and a more-like-this button when done", () => {
    const h = renderList();
    expect(screen.getByText("first words 42 ms, done 180 ms")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "More like this" }));
    expect(h.onMoreLikeThis).toHaveBeenCalledOnce();
  });

  it("says \"from cache\" next to the latency of a cache hit", () => {
    renderList({ view: { ...done, cache: "hit" } });
    const meta = screen.getByTestId("suggestion-meta");
    expect(meta.textContent).toContain("first words 42 ms, done 180 ms");
    expect(meta.querySelector(".cache-badge")?.textContent).toBe("from cache");
    // a badge, never an option that could be inserted
    expect(screen.getAllByRole("option").map((o) => o.textContent)).toEqual(["and the wind", "when the rain"]);
  });

  it("says \"shared\" for a joined generation, also while it streams", () => {
    renderList({ view: { ...done, streaming: true, cache: "join" } });
    expect(screen.getByTestId("suggestion-meta").textContent).toBe("streaming…shared");
    expect(screen.getByText("shared").className).toBe("cache-badge join");
  });

  it("says nothing about the cache for a miss, off, or an older server", () => {
    for (const cache of ["miss", "off", undefined] as const) {
      renderList({ view: { ...done, cache } });
      expect(screen.getByTestId("suggestion-meta").querySelector(".cache-badge")).toBeNull();
      cleanup();
    }
    expect([describeCache("hit"), describeCache("join"), describeCache("miss"), describeCache("off"), describeCache(undefined)])
      .toEqual(["from cache", "shared", null, null, null]);
  });

  it("says it is thinking while a request waits for its first words", () => {
    renderList({ view: null, waiting: true });
    expect(screen.getByText("Thinking…")).toBeTruthy();
  });

  it("says a request waits for the server while the connection is down, not that it is thinking", () => {
    renderList({ view: null, waiting: true, offline: true });
    expect(screen.getByText("Waiting for the server… (asked once it is back)")).toBeTruthy();
    expect(screen.queryByText("Thinking…")).toBeNull();
  });

  it("describes a streaming view by its first frame only", () => {
    expect(describeLatency({ texts: [], streaming: true, firstFrameMs: 10, elapsedMs: 50 })).toBe("first words 10 ms");
  });
});
