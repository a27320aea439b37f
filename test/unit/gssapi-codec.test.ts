import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ProtocolError } from "../../src/protocol/errors.js";
import {
  decodeProtectionLevel,
  encodeGssAbort,
  encodeGssMessage,
  encodeProtectionLevel,
  expectGssMessage,
  type GssMessage,
  parseGssMessage,
} from "../../src/protocol/gssapi.js";

test("RFC 1961 messages encode byte for byte", () => {
  assert.deepEqual(
    encodeGssMessage({ type: "auth", token: Buffer.from([0xaa, 0xbb, 0xcc]) }),
    Buffer.from([0x01, 0x01, 0x00, 0x03, 0xaa, 0xbb, 0xcc]),
  );
  assert.deepEqual(
    encodeGssMessage({ type: "protection", token: Buffer.from([0x02]) }),
    Buffer.from([0x01, 0x02, 0x00, 0x01, 0x02]),
  );
  const big = Buffer.alloc(0x1234, 7);
  const data = encodeGssMessage({ type: "data", token: big });
  assert.deepEqual(data.subarray(0, 4), Buffer.from([0x01, 0x03, 0x12, 0x34]));
  assert.equal(data.length, 4 + 0x1234);
  assert.deepEqual(encodeGssAbort(), Buffer.from([0x01, 0xff]));
  assert.throws(() => encodeGssMessage({ type: "data", token: Buffer.alloc(0x10000) }), RangeError);
});

test("RFC 1961 messages parse, needing more bytes until whole, leaving what follows", () => {
  const wire = Buffer.from([0x01, 0x01, 0x00, 0x02, 0x61, 0x62, 0x05]);
  for (let n = 0; n < 6; n++) assert.equal(parseGssMessage(wire.subarray(0, n)), undefined, `prefix ${n}`);
  assert.deepEqual(parseGssMessage(wire), { value: { type: "auth", token: Buffer.from("ab") }, consumed: 6 });
  assert.deepEqual(parseGssMessage(Buffer.from([0x01, 0xff, 0x09])), {
    value: { type: "abort" },
    consumed: 2,
  });
  assert.deepEqual(parseGssMessage(Buffer.from([0x01, 0x03, 0x00, 0x00])), {
    value: { type: "data", token: Buffer.alloc(0) },
    consumed: 4,
  });
});

test("bad versions, unknown types, aborts and wrong types are ProtocolErrors that say so", () => {
  const expectErr = (buf: number[], pattern: RegExp, parse = parseGssMessage as (b: Uint8Array) => unknown) =>
    assert.throws(
      () => parse(Buffer.from(buf)),
      (e: unknown) => e instanceof ProtocolError && pattern.test(e.message) && e.reply === 0xff,
    );
  expectErr([0x05, 0x01], /version 1, got 5/);
  expectErr([0x01, 0x04, 0, 0], /unknown GSSAPI message type 4/);
  expectErr([0x01, 0xff], /peer aborted/, expectGssMessage("auth"));
  expectErr([0x01, 0x03, 0, 0], /expected a GSSAPI auth message, got data/, expectGssMessage("auth"));
  assert.deepEqual(expectGssMessage("protection")(Buffer.from([1, 2, 0, 1, 9])), {
    value: Buffer.from([9]),
    consumed: 5,
  });
});

test("protection levels: 0, 1 and 2 round-trip; 3, other values and wrong lengths are refused", () => {
  for (const name of ["none", "integrity", "confidentiality"] as const) {
    assert.equal(decodeProtectionLevel(encodeProtectionLevel(name)), name);
  }
  assert.deepEqual(encodeProtectionLevel("confidentiality"), Buffer.from([2]));
  assert.throws(() => decodeProtectionLevel(Buffer.from([3])), /per-message selection/);
  assert.throws(() => decodeProtectionLevel(Buffer.from([9])), ProtocolError);
  assert.throws(() => decodeProtectionLevel(Buffer.from([1, 1])), /1 octet, got 2/);
});

const messageArb: fc.Arbitrary<GssMessage> = fc.oneof(
  fc.record({
    type: fc.constantFrom("auth" as const, "protection" as const, "data" as const),
    token: fc.uint8Array({ maxLength: 2000 }).map((a) => Buffer.from(a)),
  }),
  fc.constant({ type: "abort" as const }),
);

test("any message survives encode then parse, also when followed by more bytes", () => {
  fc.assert(
    fc.property(messageArb, fc.uint8Array({ maxLength: 16 }), (msg, tail) => {
      const wire = encodeGssMessage(msg);
      const parsed = parseGssMessage(Buffer.concat([wire, tail]));
      assert.deepEqual(parsed, { value: { ...msg }, consumed: wire.length });
    }),
    { numRuns: 300 },
  );
});

test("random bytes never throw anything but ProtocolError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      for (const parse of [parseGssMessage, expectGssMessage("data")]) {
        try {
          const r = parse(bytes);
          if (r) assert.ok(r.consumed >= 2 && r.consumed <= bytes.length);
        } catch (err) {
          assert.ok(
            err instanceof ProtocolError,
            `unexpected ${(err as Error).name}: ${(err as Error).message}`,
          );
        }
      }
      try {
        decodeProtectionLevel(bytes);
      } catch (err) {
        assert.ok(err instanceof ProtocolError);
      }
    }),
    { numRuns: 1000 },
  );
});
