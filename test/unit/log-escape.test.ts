import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import fc from "fast-check";
import pino from "pino";
import { escapeControls, escapeControlsInJson } from "../../src/observe/escape.js";

test("each kind of control character gets a visible form; other text is untouched", () => {
  assert.equal(escapeControls("a\nb\r\tc"), "a\\nb\\r\\tc");
  assert.equal(escapeControls("\u0000\u001b\u001f"), "\\x00\\x1b\\x1f");
  assert.equal(escapeControls("\u007f\u0080\u0085\u009f"), "\\x7f\\x80\\x85\\x9f");
  assert.equal(escapeControls("\u2028\u2029"), "\\u2028\\u2029");
  const plain = 'plain "text" with \\ backslashes, é, 日本, \u00a0 and \u{1f600}';
  assert.equal(escapeControls(plain), plain);
});

// Strings drawn from what matters here: controls, JSON's own escapes, and ordinary text.
const tricky = fc
  .array(
    fc.oneof(
      fc.constantFrom("\n", "\r", "\t", "\b", "\f", "\u0000", "\u001b", "\u007f", "\u0085", "\u009f"),
      fc.constantFrom("\u2028", "\u2029", "\\", "\\n", '"', "/", "\u00a0", "é", "\ud800", "\u{1f600}"),
      fc.string({ maxLength: 4 }),
    ),
    { maxLength: 12 },
  )
  .map((parts) => parts.join(""));

test("a JSON line reads back as the escaped form of every string in it, keys included", () => {
  fc.assert(
    fc.property(tricky, tricky, (key, value) => {
      const line = `${JSON.stringify({ [key]: value, n: 1 })}\n`;
      const out = escapeControlsInJson(line);
      assert.ok(out.endsWith("}\n") && !out.slice(0, -1).includes("\n"));
      assert.deepEqual(JSON.parse(out), { [escapeControls(key)]: escapeControls(value), n: 1 });
    }),
    { numRuns: 500 },
  );
});

test("as pino's streamWrite hook, it escapes the message and every field", () => {
  let written = "";
  const sink = new Writable({
    write(chunk, _enc, done) {
      written += String(chunk);
      done();
    },
  });
  const log = pino({ base: undefined, hooks: { streamWrite: escapeControlsInJson } }, sink);
  log.info({ user: "bob\nINFO forged", nested: { list: ["\u2028"] } }, "login: %s", "bob\nINFO forged");
  assert.equal(written.split("\n").length, 2);
  const record = JSON.parse(written);
  assert.equal(record.msg, "login: bob\\nINFO forged");
  assert.equal(record.user, "bob\\nINFO forged");
  assert.deepEqual(record.nested, { list: ["\\u2028"] });
});
