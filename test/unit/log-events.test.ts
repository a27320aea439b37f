import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { EVENT_NAMES } from "../../src/observe/events.js";
import { eventFields, logLineSchema } from "../../src/observe/log-schema.js";

// dist/test/unit → the repository root.
const root = fileURLToPath(new URL("../../../", import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return p.endsWith(".ts") ? [p] : [];
  });
}

/** The first argument of the call whose "(" is at `open`, as written. */
function firstArgument(text: string, open: number): string {
  let depth = 0;
  for (let i = open + 1; i < text.length; i++) {
    const c = text[i];
    if (c === "(" || c === "{" || c === "[") depth++;
    else if (c === ")" || c === "}" || c === "]") {
      if (depth === 0) return text.slice(open + 1, i);
      depth--;
    } else if (c === "," && depth === 0) return text.slice(open + 1, i);
  }
  return "";
}

test("every log call in src names its event: ev(…), or an object literal with an event field", () => {
  const calls: string[] = [];
  const unnamed: string[] = [];
  for (const file of sources(path.join(root, "src"))) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/\blog\??\.(trace|debug|info|warn|error|fatal)\(/g)) {
      const arg = firstArgument(text, m.index + m[0].length - 1).trim();
      const where = `${path.relative(root, file)}:${text.slice(0, m.index).split("\n").length}`;
      calls.push(where);
      // A variable must be a literal declared in the same file with its event first.
      const named =
        arg.startsWith("ev(") ||
        /^\{\s*event:/.test(arg) ||
        (/^\w+$/.test(arg) && new RegExp(`const ${arg} = \\{\\s*event:`).test(text));
      if (!named) unnamed.push(`${where}: ${arg.slice(0, 60)}`);
    }
  }
  assert.ok(calls.length >= 40, `found only ${calls.length} log calls: is the pattern still right?`);
  assert.deepEqual(unnamed, []);
});

test("event names used in src are all in the list, and every listed event is used", () => {
  const used = new Set<string>();
  for (const file of sources(path.join(root, "src"))) {
    if (
      file.endsWith(path.join("observe", "events.ts")) ||
      file.endsWith(path.join("observe", "log-schema.ts"))
    )
      continue;
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/\bev\("([a-z.]+)"|\bevent: "([a-z.]+)"|"((?:policy|auth)\.[a-z]+)"/g))
      used.add(m[1] ?? m[2] ?? m[3]!);
  }
  const known = new Set<string>(EVENT_NAMES);
  assert.deepEqual(
    [...used].filter((e) => !known.has(e)),
    [],
    "used but not listed",
  );
  assert.deepEqual(
    EVENT_NAMES.filter((e) => !used.has(e)),
    [],
    "listed but never logged",
  );
});

test("docs/logging.md documents every event and every field of it", () => {
  const doc = readFileSync(path.join(root, "docs", "logging.md"), "utf8");
  const missing: string[] = [];
  for (const name of EVENT_NAMES) {
    // Each event has its own heading, then its fields as `name` in the section below it.
    const start = doc.indexOf(`### \`${name}\``);
    if (start < 0) {
      missing.push(`${name}: no "### \`${name}\`" section`);
      continue;
    }
    const next = doc.indexOf("\n### ", start + 1);
    const section = doc.slice(start, next < 0 ? undefined : next);
    for (const field of eventFields(name)) {
      if (!section.includes(`\`${field}\``)) missing.push(`${name}: field ${field}`);
    }
    if (!/```json\n\{.*"event":/.test(section) && !RARE.has(name)) missing.push(`${name}: no example line`);
  }
  assert.deepEqual(missing, []);
});

/** Events too hard to provoke for an example (a hung worker, a worker that cannot start). */
const RARE = new Set(["shutdown.overdue", "worker.fail", "worker.reload.ok", "worker.reload.fail"]);

test("every example line in docs/logging.md is valid under the schema", () => {
  const doc = readFileSync(path.join(root, "docs", "logging.md"), "utf8");
  const examples = [...doc.matchAll(/```json\n([\s\S]*?)```/g)].flatMap((m) =>
    m[1]!.split("\n").filter((l) => l.startsWith("{")),
  );
  assert.ok(examples.length >= EVENT_NAMES.length - RARE.size, `only ${examples.length} examples`);
  for (const line of examples) {
    const r = logLineSchema.safeParse(JSON.parse(line));
    assert.ok(r.success, `${line}\n${r.error?.message}`);
  }
});
