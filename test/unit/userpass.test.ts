import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  encodeUserPassReply,
  encodeUserPassRequest,
  parseUserPassReply,
  parseUserPassRequest,
  USERPASS_FAILURE,
} from "../../src/protocol/userpass.js";
import { assertNeedsMoreAtEveryPrefix, assertProtocolError, hex, parseExactly } from "../helpers/codec.js";

describe("RFC 1929 username/password", () => {
  test("request encodes and parses to the byte", () => {
    const bytes = hex("01 04 75736572 06 736563726574");
    assert.deepEqual(encodeUserPassRequest({ username: "user", password: "secret" }), bytes);
    assert.deepEqual(parseExactly(parseUserPassRequest, bytes), { username: "user", password: "secret" });
    assertNeedsMoreAtEveryPrefix(parseUserPassRequest, bytes);
  });

  test("one-byte and 255-byte fields, UTF-8 included", () => {
    const long = "p".repeat(255);
    const bytes = Buffer.concat([hex("01 01 75 ff"), Buffer.from(long)]);
    assert.deepEqual(encodeUserPassRequest({ username: "u", password: long }), bytes);
    assert.deepEqual(parseExactly(parseUserPassRequest, bytes), { username: "u", password: long });
    assertNeedsMoreAtEveryPrefix(parseUserPassRequest, bytes);
    const utf8 = encodeUserPassRequest({ username: "zoë", password: "ü" });
    assert.deepEqual(utf8, hex("01 04 7a6fc3ab 02 c3bc"));
    assert.deepEqual(parseExactly(parseUserPassRequest, utf8), { username: "zoë", password: "ü" });
  });

  test("a wrong sub-negotiation version gets status 0x01", () => {
    assertProtocolError(
      () => parseUserPassRequest(hex("05 01 75 01 70")),
      USERPASS_FAILURE,
      /version 1, got 5/,
    );
    assertProtocolError(() => parseUserPassRequest(hex("00")), USERPASS_FAILURE);
  });

  test("an empty username or password gets status 0x01", () => {
    assertProtocolError(() => parseUserPassRequest(hex("01 00 01 70")), USERPASS_FAILURE, /empty username/);
    assertProtocolError(() => parseUserPassRequest(hex("01 00")), USERPASS_FAILURE);
    assertProtocolError(() => parseUserPassRequest(hex("01 01 75 00")), USERPASS_FAILURE, /empty password/);
  });

  test("the encoder refuses fields of 0 or more than 255 bytes", () => {
    for (const [username, password] of [
      ["", "p"],
      ["u", ""],
      ["u".repeat(256), "p"],
      ["u", "p".repeat(256)],
      ["u", "ß".repeat(128)],
    ] as const) {
      assert.throws(() => encodeUserPassRequest({ username, password }), RangeError);
    }
  });

  test("reply: 0x00 success, 0x01 failure, any non-zero status is a failure", () => {
    assert.deepEqual(encodeUserPassReply(true), hex("01 00"));
    assert.deepEqual(encodeUserPassReply(false), hex("01 01"));
    assert.deepEqual(parseExactly(parseUserPassReply, hex("01 00")), { ok: true, status: 0 });
    assert.deepEqual(parseExactly(parseUserPassReply, hex("01 01")), { ok: false, status: 1 });
    assert.deepEqual(parseExactly(parseUserPassReply, hex("01 7f")), { ok: false, status: 0x7f });
    assertNeedsMoreAtEveryPrefix(parseUserPassReply, hex("01 00"));
    assertProtocolError(() => parseUserPassReply(hex("05 00")), undefined);
  });
});
