import { useCallback, useEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import { createEditor, Transforms, type Descendant } from "slate";
import { HistoryEditor, withHistory } from "slate-history";
import { Editable, ReactEditor, Slate, withReact } from "slate-react";
import { apiKeyProblem } from "../api/apiKey";
import type { ConnectionState } from "../protocol/client";
import type { Settings } from "../settings";
import { insertionText, loadDocument, saveDocument, textBeforeCursor, textToValue, valueToText, wordCount } from "./document";
import { SuggestionList } from "./SuggestionList";
import { useSuggestions } from "./useSuggestions";

/** How long typing must pause before suggestions are asked for (ms); after a space, sooner. */
export const PAUSE_MS = 600;
export const AFTER_SPACE_MS = 150;

interface Props {
  settings: Settings;
  onConnection(state: ConnectionState): void;
  onText(text: string): void;
}

export function WritingEditor({ settings, onConnection, onText }: Props) {
  const editor = useMemo(() => withHistory(withReact(createEditor())), []);
  const initialValue = useMemo<Descendant[]>(() => textToValue(loadDocument()), []);
  const suggestions = useSuggestions(settings);
  const { ask, dismiss, view } = suggestions;
  const [selected, setSelected] = useState(-1);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);

  useEffect(() => onConnection(suggestions.connection), [suggestions.connection, onConnection]);
  useEffect(() => onText(valueToText(initialValue)), [initialValue, onText]);
  useEffect(() => () => {
    if (timer.current !== null) clearTimeout(timer.current);
  }, []);


  // the server refused the last request for want of a (valid) key, until suggestions come again
  const keyRefused = useRef(false);
  useEffect(() => {
    if (apiKeyProblem(suggestions.error?.code)) keyRefused.current = true;
    else if (view) keyRefused.current = false;
  }, [suggestions.error, view]);

  const count = view?.texts.length ?? 0;
  useEffect(() => {
    if (selected >= count) setSelected(count - 1);
  }, [count, selected]);

  const schedule = useCallback((delay: number, seed?: number) => {
    if (timer.current !== null) clearTimeout(timer.current);
    timer.current = setTimeout(() => {
      timer.current = null;
      ask(textBeforeCursor(editor), seed);
    }, delay);
  }, [ask, editor]);

  // new settings: what is shown (or its error) was asked with the old ones. A key entered after the
  // server asked for one asks again (once typing in the key field pauses), without more writing.
  const lastKey = useRef(settings.apiKey);
  useEffect(() => {
    dismiss();
    setSelected(-1);
    if (settings.apiKey === lastKey.current) return;
    lastKey.current = settings.apiKey;
    if (keyRefused.current && settings.apiKey.trim() !== "") schedule(PAUSE_MS);
  }, [settings, dismiss, schedule]);

  const onChange = useCallback((value: Descendant[]) => {
    const edited = editor.operations.some((op) => op.type !== "set_selection");
    if (!edited) return;
    const text = valueToText(value);
    saveDocument(text);
    onText(text);
    // typing again cancels the running request; its suggestions disappear at once
    dismiss();
    setSelected(-1);
    const before = textBeforeCursor(editor);
    schedule(/\s$/.test(before) ? AFTER_SPACE_MS : PAUSE_MS);
  }, [dismiss, editor, onText, schedule]);

  const pick = useCallback((index: number) => {
    const text = view?.texts[index];
    if (text === undefined) return;
    const insert = insertionText(textBeforeCursor(editor), text);
    ReactEditor.focus(editor);
    // its own undo step: Ctrl+Z takes the whole suggestion back out
    HistoryEditor.withNewBatch(editor, () => Transforms.insertText(editor, insert));
  }, [editor, view]);

  const onKeyDown = useCallback((e: KeyboardEvent<HTMLDivElement>) => {
    if (count === 0) {
      if (e.key === "Escape") dismiss();
      return;
    }
    switch (e.key) {
      case "ArrowDown":
        e.preventDefault();
        setSelected((s) => (s + 1) % count);
        break;
      case "ArrowUp":
        e.preventDefault();
        setSelected((s) => (s <= 0 ? count - 1 : s - 1));
        break;
      case "Tab":
        if (e.shiftKey) return;
        e.preventDefault();
        pick(Math.max(0, selected));
        break;
      case "Enter":
        // Enter picks only a suggestion chosen with the arrows; otherwise it is a new paragraph
        if (selected < 0) return;
        e.preventDefault();
        pick(selected);
        break;
      case "Escape":
        e.preventDefault();
        dismiss();
        setSelected(-1);
        break;
    }
  }, [count, dismiss, pick, selected]);

  const moreLikeThis = useCallback(() => {
    dismiss();
    setSelected(-1);
    schedule(0, Math.floor(Math.random() * 2 ** 31));
  }, [dismiss, schedule]);

  return (
    <div className="writing">
      <Slate editor={editor} initialValue={initialValue} onChange={onChange}>
        <Editable
          className="editable"
          data-testid="editor"
          aria-label="Document"
          aria-multiline="true"
          aria-controls={count > 0 ? "suggestion-list" : undefined}
          aria-activedescendant={selected >= 0 && count > 0 ? `suggestion-${selected}` : undefined}
          placeholder="Start writing…"
          spellCheck
          autoFocus
          onKeyDown={onKeyDown}
        />
      </Slate>
      <SuggestionList
        view={view}
        error={suggestions.error}
        selected={selected}
        waiting={suggestions.waiting}
        offline={suggestions.connection !== "open"}
        onPick={pick}
        onHover={setSelected}
        onMoreLikeThis={moreLikeThis}
      />
    </div>
  );
}

export { wordCount };
