import { apiKeyMessage, apiKeyProblem, focusApiKeyInput } from "../api/apiKey";
import type { CacheOutcome, FrameError } from "../protocol/types";

export interface SuggestionView {
  texts: string[];
  streaming: boolean;
  firstFrameMs?: number;
  elapsedMs?: number;
  seed?: number;
  /** where the suggestions come from, when the server says */
  cache?: CacheOutcome;
}

/** What a cache outcome is worth telling the writer: a hit or a shared generation; nothing otherwise. */
export function describeCache(cache: CacheOutcome | undefined): string | null {
  if (cache === "hit") return "from cache";
  if (cache === "join") return "shared";
  return null;
}

interface Props {
  view: SuggestionView | null;
  error: FrameError | null;
  selected: number;
  waiting: boolean;
  /** the socket is not open: a request waits for the server to be back */
  offline?: boolean;
  onPick(index: number): void;
  onHover(index: number): void;
  onMoreLikeThis?(): void;
}

export function describeLatency(view: SuggestionView): string {
  const parts: string[] = [];
  if (view.firstFrameMs !== undefined) parts.push(`first words ${Math.round(view.firstFrameMs)} ms`);
  if (!view.streaming && view.elapsedMs !== undefined) parts.push(`done ${Math.round(view.elapsedMs)} ms`);
  return parts.join(", ");
}

/**
 * The suggestions under the editor. Errors are shown as an alert, never as an option that can be
 * inserted. Options take mouse clicks without taking the editor's focus (mousedown is prevented).
 */
export function SuggestionList({ view, error, selected, waiting, offline = false, onPick, onHover, onMoreLikeThis }: Props) {
  // view.texts holds only non-empty suggestions (useSuggestions drops blank ones), so indices match `selected`
  const options = view ? view.texts.map((t, i) => ({ t, i })) : [];
  // the server wants a (valid) key: say where it goes rather than the protocol's wording
  const keyProblem = error ? apiKeyProblem(error.code) : null;
  const errorText = keyProblem ? apiKeyMessage(keyProblem) : error?.message;
  const announcement = error
    ? `Error: ${errorText ?? ""}`
    : view && !view.streaming
      ? `${options.length} suggestion${options.length === 1 ? "" : "s"}`
      : "";
  return (
    <section className="suggestions" aria-label="Suggestions">
      <div className="sr-only" aria-live="polite" data-testid="live">
        {announcement}
      </div>
      {error && (
        <div role="alert" className="suggestion-error">
          {errorText}
          {error.field && !keyProblem ? <span className="error-field"> ({error.field})</span> : null}
          {keyProblem && (
            <>
              {" "}
              <button type="button" className="link" onClick={focusApiKeyInput}>Enter the key</button>
            </>
          )}
        </div>
      )}
      {!error && waiting && options.length === 0 && (
        <div className="suggestion-status">{offline ? "Waiting for the server… (asked once it is back)" : "Thinking…"}</div>
      )}
      {options.length > 0 && (
        <ul role="listbox" id="suggestion-list" aria-label="Suggestions" className="suggestion-list">
          {options.map(({ t, i }) => (
            <li
              key={i}
              id={`suggestion-${i}`}
              role="option"
              aria-selected={i === selected}
              className={i === selected ? "suggestion selected" : "suggestion"}
              onMouseDown={(e) => e.preventDefault()}
              onMouseEnter={() => onHover(i)}
              onClick={() => onPick(i)}
            >
              {t}
            </li>
          ))}
        </ul>
      )}
      {view && options.length > 0 && (
        <div className="suggestion-meta" data-testid="suggestion-meta">
          <span>{view.streaming ? "streaming…" : describeLatency(view)}</span>
          {describeCache(view.cache) && (
            <span
              className={`cache-badge ${view.cache ?? ""}`}
              title={view.cache === "hit" ? "answered from the server's cache" : "shares an identical generation already running"}
            >
              {describeCache(view.cache)}
            </span>
          )}
          {!view.streaming && onMoreLikeThis && (
            <button type="button" className="link" onMouseDown={(e) => e.preventDefault()} onClick={onMoreLikeThis}>
              More like this
            </button>
          )}
        </div>
      )}
    </section>
  );
}
