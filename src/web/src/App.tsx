import { useCallback, useEffect, useState } from "react";
import { fetchModels, modelChoices, type ModelChoice } from "./api/models";
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

export function App() {
  const [settings, setSettings] = useState<Settings>(() => loadSettings());
  const [models, setModels] = useState<ModelChoice[]>([]);
  const [modelsError, setModelsError] = useState<string | null>(null);
  const [connection, setConnection] = useState<ConnectionState>("connecting");
  const [text, setText] = useState("");

  useEffect(() => {
    let live = true;
    fetchModels()
      .then((m) => live && setModels(modelChoices(m)))
      .catch((e: unknown) => live && setModelsError(`Models could not be listed: ${String(e instanceof Error ? e.message : e)}`));
    return () => {
      live = false;
    };
  }, []);

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
          <SettingsPanel settings={settings} models={models} modelsError={modelsError} onChange={changeSettings} />
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
