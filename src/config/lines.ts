import { isMap, isSeq, LineCounter, parseDocument } from "yaml";

/** Finds where keys of a YAML (or JSON) text are written, so errors and rules can name their line. */
export interface SourceLines {
  /** The 1-based line of the node at a key path (["rules", 2, "allow"]), if it exists. */
  lineOf(path: readonly PropertyKey[]): number | undefined;
  /** The line of each item of a top-level list (`rules`, `clients`). */
  itemLines(key: string): number[];
}

export function sourceLines(text: string): SourceLines {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter });
  const lineAt = (node: unknown): number | undefined => {
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    return range ? counter.linePos(range[0]).line : undefined;
  };
  const nodeAt = (path: readonly PropertyKey[]): unknown => {
    let node: unknown = doc.contents;
    let last: unknown = node;
    for (const part of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (p.key as { value?: unknown })?.value === part);
        node = pair?.value ?? pair?.key;
      } else if (isSeq(node)) node = node.items[Number(part)];
      else break;
      if (node === undefined || node === null) break;
      last = node;
    }
    return last;
  };
  return {
    lineOf: (path) => lineAt(nodeAt(path)),
    itemLines: (key) => {
      const seq = nodeAt([key]);
      return isSeq(seq) ? seq.items.map((item) => lineAt(item) ?? 0) : [];
    },
  };
}
