import { useCallback, useEffect, useRef, useState } from "react";
import { apiKeyMessage, apiKeyProblem, type ApiKeyProblem } from "./api/apiKey";
import { fetchModels, modelChoices, ModelsError, type ModelChoice } from "./api/models";
import { wordCount } from "./editor/document";
import { WritingEditor } from "./editor/WritingEditor";
import type { ConnectionState } from "./protocol/client";
import { loadSettings, saveSettings, type Settings } from "./settings";
import { SettingsPanel } from "./SettingsPanel";

const CONNECTION_LABEL: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

/** How long the API key field must rest before the models list is asked for again with it (ms). */
export const KEY_RETRY_MS = 400;

/** What the page says when GET /v1/models fails: a key problem asks for the key. */
function modelsFailure(e: unknown): { message: string; keyProblem: ApiKeyProblem | null } {
  const keyProblem = e instanceof ModelsError ? apiKeyProblem(e.code) : null;
  if (keyProblem) {
    const detail = e instanceof ModelsError && e.status === 0 ? ` (${e.message})` : "";
    return { message: apiKeyMessage(keyProblem, "below") + detail, keyProblem };
  }
  return { message: `Models could not be listed: ${String(e instanceof Error ? e.message : e)}`, keyProblem: null };
}

export function App() {
  const [settings, setSettings] = useState<Settings>(() => loadSettings());
  const [models, setModels] = useState<ModelChoice[]>([]);
  const [modelsError, setModelsError] = useState<string | null>(null);
  const [keyProblem, setKeyProblem] = useState<ApiKeyProblem | null>(null);
  const [connection, setConnection] = useState<ConnectionState>("connecting");
  const [text, setText] = useState("");

  // the models list, asked again (once typing in the key field rests) whenever the key changes
  const apiKey = settings.apiKey;
  const firstModelsFetch = useRef(true);
  useEffect(() => {
    let live = true;
    const delay = firstModelsFetch.current ? 0 : KEY_RETRY_MS;
    firstModelsFetch.current = false;
    const timer = setTimeout(() => {
      fetchModels(apiKey)
        .then((m) => {
          if (!live) return;
          setModels(modelChoices(m));
          setModelsError(null);
          setKeyProblem(null);
        })
        .catch((e: unknown) => {
          if (!live) return;
          const failure = modelsFailure(e);
          setModelsError(failure.message);
          setKeyProblem(failure.keyProblem);
        });
    }, delay);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [apiKey]);

  const changeSettings = useCallback((next: Settings) => {
    setSettings(next);
    saveSettings(next);
  }, []);

  const download = useCallback(() => {
    const url = URL.createObjectURL(new Blob([text], { type: "text/markdown;charset=utf-8" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "writeup.md";
    a.click();
    URL.revokeObjectURL(url);
  }, [text]);

  return (
    <div className="app">
      <header className="topbar">
        <h1>writeup</h1>
        <span className={`connection ${connection}`} data-testid="connection" role="status">
          {CONNECTION_LABEL[connection]}
        </span>
      </header>
      <main className="layout">
        <WritingEditor settings={settings} onConnection={setConnection} onText={setText} />
        <aside>
          <SettingsPanel settings={settings} models={models} modelsError={modelsError} keyProblem={keyProblem} onChange={changeSettings} />
          <div className="doc-tools">
            <span data-testid="word-count">{wordCount(text)} words</span>
            <button type="button" onClick={() => void navigator.clipboard?.writeText(text)}>Copy</button>
            <button type="button" onClick={download}>Download .md</button>
          </div>
          <p className="help">
            Pause or type a space for suggestions. ↑/↓ choose, Enter or Tab insert, Esc dismiss, Ctrl+Z undo.
          </p>
        </aside>
      </main>
    </div>
  );
}
