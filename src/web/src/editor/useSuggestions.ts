import { useCallback, useEffect, useRef, useState } from "react";
import { keyToSend } from "../api/apiKey";
import { WriteupClient, type ConnectionState } from "../protocol/client";
import { cleanSuggestion, promptWindow } from "../protocol/frames";
import type { FrameError } from "../protocol/types";
import { newSessionId, writeupSocketUrl } from "../protocol/url";
import type { Settings } from "../settings";
import type { SuggestionView } from "./SuggestionList";

export interface Suggestions {
  connection: ConnectionState;
  view: SuggestionView | null;
  error: FrameError | null;
  waiting: boolean;
  /** asks for suggestions after the prompt text (its last 500 characters) */
  ask(textBefore: string, seed?: number): void;
  /** cancels the running request and clears what is shown */
  dismiss(): void;
}

/** One WriteupClient for the page, and the suggestions of its running request. */
export function useSuggestions(settings: Settings): Suggestions {
  const [connection, setConnection] = useState<ConnectionState>("connecting");
  const [view, setView] = useState<SuggestionView | null>(null);
  const [error, setError] = useState<FrameError | null>(null);
  const [waiting, setWaiting] = useState(false);
  const clientRef = useRef<WriteupClient | null>(null);
  const settingsRef = useRef(settings);
  settingsRef.current = settings;

  useEffect(() => {
    const session = newSessionId();
    const client = new WriteupClient({
      url: () => writeupSocketUrl(window.location, session),
      events: {
        onState: (s) => setConnection(s),
        onUpdate: (u) => {
          setWaiting(!u.done);
          setView({
            texts: u.texts.map(cleanSuggestion).filter((t) => t.trim() !== ""),
            streaming: !u.done,
            firstFrameMs: u.firstFrameMs,
            elapsedMs: u.elapsedMs,
            seed: u.frame.seed,
            ...(u.frame.cache ? { cache: u.frame.cache } : {}),
          });
        },
        onError: (_id, e) => {
          setWaiting(false);
          setView(null);
          setError(e);
        },
        onProtocolError: (m) => console.warn(`writeup protocol: ${m}`),
      },
    });
    clientRef.current = client;
    client.connect();
    return () => {
      client.close();
      clientRef.current = null;
    };
  }, []);

  const ask = useCallback((textBefore: string, seed?: number) => {
    const client = clientRef.current;
    if (!client) return;
    const prompt = promptWindow(textBefore);
    setView(null);
    setError(null);
    if (prompt.trim() === "") {
      client.cancel();
      setWaiting(false);
      return;
    }
    const s = settingsRef.current;
    const chosenSeed = seed ?? (s.seed === null ? undefined : s.seed);
    const apiKey = keyToSend(s.apiKey);
    client.request({
      prompt,
      temperature: s.temperature,
      top_k: s.topK,
      top_p: s.topP,
      length: s.length,
      batch_size: s.batchSize,
      ...(s.model ? { model_name: s.model } : {}),
      ...(chosenSeed !== undefined ? { seed: chosenSeed } : {}),
      ...(apiKey ? { api_key: apiKey } : {}),
    });
    setWaiting(true);
  }, []);

  const dismiss = useCallback(() => {
    clientRef.current?.cancel();
    setView(null);
    setError(null);
    setWaiting(false);
  }, []);

  return { connection, view, error, waiting, ask, dismiss };
}
