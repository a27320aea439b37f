import assert from "node:assert/strict";
import { ProtocolError } from "../../src/protocol/errors.js";
import type { Parser } from "../../src/protocol/parse.js";

/** Bytes from a hex string; spaces are ignored so messages can be written field by field. */
export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ""), "hex");
}

/** Asserts that `fn` throws a ProtocolError whose `.reply` is `reply` (undefined: nothing to say). */
export function assertProtocolError(fn: () => unknown, reply: number | undefined, message?: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof ProtocolError, `expected a ProtocolError, got ${String(thrown)}`);
  assert.equal(thrown.reply, reply, `reply code of "${thrown.message}"`);
  if (message) assert.match(thrown.message, message);
}

/** Every strict prefix of a whole message must mean "need more": never a value, never an error. */
export function assertNeedsMoreAtEveryPrefix<T>(parse: Parser<T>, message: Uint8Array): void {
  for (let n = 0; n < message.length; n++) {
    assert.equal(parse(message.subarray(0, n)), undefined, `prefix of ${n}/${message.length} bytes`);
  }
}

/** Parses a whole message followed by unrelated bytes: the parser must stop at the message's end. */
export function parseExactly<T>(parse: Parser<T>, message: Uint8Array): T {
  const trailer = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
  const parsed = parse(Buffer.concat([message, trailer]));
  assert.ok(parsed, "a whole message must parse");
  assert.equal(parsed.consumed, message.length, "consumed must be the message length");
  return parsed.value;
}
