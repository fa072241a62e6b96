import { Editor, Element, Node, Range, type BaseEditor, type Descendant } from "slate";
import type { HistoryEditor } from "slate-history";
import type { ReactEditor } from "slate-react";

export interface ParagraphElement {
  type: "paragraph";
  children: { text: string }[];
}

declare module "slate" {
  interface CustomTypes {
    Editor: BaseEditor & ReactEditor & HistoryEditor;
    Element: ParagraphElement;
    Text: { text: string };
  }
}

const KEY = "writeup.document.v1";

/** Plain text (paragraphs split on newlines) as Slate's value. */
export function textToValue(text: string): Descendant[] {
  return text.split("\n").map((line) => ({ type: "paragraph", children: [{ text: line }] }));
}

/** Slate's value as plain text, one line per paragraph. */
export function valueToText(value: Descendant[]): string {
  return value.map((n) => Node.string(n)).join("\n");
}

/** The text from the document's start to the cursor (paragraphs joined with newlines). */
export function textBeforeCursor(editor: Editor): string {
  const { selection } = editor;
  if (!selection) return valueToText(editor.children);
  const point = Range.start(selection);
  const blockIndex = point.path[0];
  const parts: string[] = [];
  for (let i = 0; i < blockIndex; i++) parts.push(Node.string(editor.children[i]));
  const block = editor.children[blockIndex];
  if (block && Element.isElement(block)) {
    parts.push(Editor.string(editor, { anchor: Editor.start(editor, [blockIndex]), focus: point }));
  }
  return parts.join("\n");
}

export function wordCount(text: string): number {
  const m = text.match(/\S+/g);
  return m ? m.length : 0;
}

/** What to insert for a suggestion: a space first unless the text already ends with one. */
export function insertionText(before: string, suggestion: string): string {
  const s = suggestion.replace(/^\s+/, "");
  if (before === "" || /\s$/.test(before)) return s;
  return " " + s;
}

export function loadDocument(storage: Storage | undefined = globalThis.localStorage): string {
  try {
    return storage?.getItem(KEY) ?? "";
  } catch {
    return "";
  }
}

export function saveDocument(text: string, storage: Storage | undefined = globalThis.localStorage): void {
  try {
    storage?.setItem(KEY, text);
  } catch {
    // storage full or disabled: the document lives in this page only
  }
}
