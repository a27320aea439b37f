import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ipv6Text, type SocksAddress } from "../../src/protocol/address.js";
import { ProtocolError } from "../../src/protocol/errors.js";
import type { Parser } from "../../src/protocol/parse.js";
import { sniffProtocol } from "../../src/protocol/sniff.js";
import {
  encodeSocks4Reply,
  encodeSocks4Request,
  parseSocks4Reply,
  parseSocks4Request,
  type Socks4Request,
} from "../../src/protocol/socks4.js";
import {
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  parseGreeting,
  parseMethodSelection,
  parseReply,
  parseRequest,
} from "../../src/protocol/socks5.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../../src/protocol/udp.js";
import {
  encodeUserPassReply,
  encodeUserPassRequest,
  parseUserPassReply,
  parseUserPassRequest,
} from "../../src/protocol/userpass.js";
import { assertNeedsMoreAtEveryPrefix, parseExactly } from "../helpers/codec.js";
import { normalHostName } from "../helpers/names.js";

const RUNS = { numRuns: 2000 };
const bytesOf = (s: string): number => Buffer.byteLength(s, "utf8");

/** fc.record builds null-prototype objects; the codecs build plain ones. */
function rec<T extends object>(arb: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return arb.map((o) => ({ ...o }));
}

const port = fc.integer({ min: 0, max: 0xffff });
const byte = fc.integer({ min: 0, max: 0xff });
const ipv4 = fc.tuple(byte, byte, byte, byte).map((b) => b.join("."));
const ipv6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map(ipv6Text);
/** 1 to 255 bytes of UTF-8: short names in any script, and long ASCII ones up to the limit. */
const text255 = fc
  .oneof(
    fc.string({ unit: "binary", minLength: 1, maxLength: 70 }),
    fc.string({ unit: "binary-ascii", minLength: 200, maxLength: 255 }),
  )
  .filter((s) => bytesOf(s) >= 1 && bytesOf(s) <= 255);
/** What a server parses back unchanged: names are checked and normalised (src/protocol/hostname.ts). */
const address: fc.Arbitrary<SocksAddress> = fc.oneof(
  rec(fc.record({ type: fc.constant("ipv4" as const), host: ipv4, port })),
  rec(fc.record({ type: fc.constant("ipv6" as const), host: ipv6, port })),
  rec(fc.record({ type: fc.constant("domain" as const), host: normalHostName, port })),
);
/** What a client takes from a reply as sent: any 1 to 255 bytes of name. */
const replyAddress: fc.Arbitrary<SocksAddress> = fc.oneof(
  rec(fc.record({ type: fc.constant("ipv4" as const), host: ipv4, port })),
  rec(fc.record({ type: fc.constant("ipv6" as const), host: ipv6, port })),
  rec(fc.record({ type: fc.constant("domain" as const), host: text255, port })),
);
const noNul = (s: string): boolean => !s.includes("\0");
const socks4Request: fc.Arbitrary<Socks4Request> = rec(
  fc.record({
    command: fc.constantFrom("connect" as const, "bind" as const),
    address: fc.oneof(
      rec(
        fc.record({
          type: fc.constant("ipv4" as const),
          host: ipv4.filter((h) => !/^0\.0\.0\.[1-9]/.test(h)),
          port,
        }),
      ),
      rec(fc.record({ type: fc.constant("domain" as const), host: normalHostName, port })),
    ),
    userId: fc.oneof(fc.constant(""), text255.filter(noNul)),
  }),
);

/** A streamed message round-trips, and every strict prefix of it means "need more". */
function roundTrip<T>(arb: fc.Arbitrary<T>, encode: (v: T) => Buffer, parse: Parser<T>): void {
  fc.assert(
    fc.property(arb, (value) => {
      const bytes = encode(value);
      assert.deepEqual(parseExactly(parse, bytes), value);
      assertNeedsMoreAtEveryPrefix(parse, bytes);
    }),
    RUNS,
  );
}

describe("every value encodes and parses back to itself", () => {
  test("SOCKS5 greeting", () =>
    roundTrip(
      rec(fc.record({ methods: fc.array(byte, { minLength: 1, maxLength: 255 }) })),
      encodeGreeting,
      parseGreeting,
    ));
  test("SOCKS5 method selection", () => roundTrip(byte, encodeMethodSelection, parseMethodSelection));
  test("SOCKS5 request", () =>
    roundTrip(
      rec(
        fc.record({ command: fc.constantFrom("connect" as const, "bind" as const, "udp" as const), address }),
      ),
      encodeRequest,
      parseRequest,
    ));
  test("SOCKS5 reply", () =>
    roundTrip(
      rec(fc.record({ reply: byte, address: replyAddress })),
      (r) => encodeReply(r.reply, r.address),
      parseReply,
    ));
  test("RFC 1929 request", () =>
    roundTrip(
      rec(fc.record({ username: text255, password: text255 })),
      encodeUserPassRequest,
      parseUserPassRequest,
    ));
  test("RFC 1929 reply", () =>
    roundTrip(
      fc.boolean().map((ok) => ({ ok, status: ok ? 0 : 1 })),
      (r) => encodeUserPassReply(r.ok),
      parseUserPassReply,
    ));
  test("SOCKS4 and SOCKS4a request", () => roundTrip(socks4Request, encodeSocks4Request, parseSocks4Request));
  test("SOCKS4 reply", () =>
    roundTrip(
      rec(fc.record({ reply: byte, host: ipv4, port })),
      (r) => encodeSocks4Reply(r.reply, r.host, r.port),
      parseSocks4Reply,
    ));
  test("SOCKS5 UDP datagram", () =>
    fc.assert(
      fc.property(
        rec(
          fc.record({
            frag: byte,
            address,
            data: fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)),
          }),
        ),
        (d) => assert.deepEqual(parseUdpDatagram(encodeUdpDatagram(d)), d),
      ),
      RUNS,
    ));
});

/**
 * Inputs worth fuzzing: pure noise, and valid messages with one byte changed, cut short, or with
 * noise appended (noise alone rarely gets past the version byte).
 */
function hostile(valid: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  const noise = fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a));
  const mutated = fc.tuple(valid, fc.nat(), byte, fc.nat(), noise).map(([bytes, at, value, cut, tail]) => {
    const b = Buffer.from(bytes);
    if (b.length > 0) b[at % b.length] = value;
    return Buffer.concat([b.subarray(0, cut % (b.length + 1)), cut % 2 ? tail : Buffer.alloc(0)]);
  });
  return fc.oneof(noise, mutated);
}

/** Re-encoding a parsed value parses to the same value; undefined so no byte comparison follows. */
function fixedPoint<T>(value: T, encode: (v: T) => Buffer, parse: Parser<T>): undefined {
  assert.deepEqual(parseExactly(parse, encode(value)), value, "normal form is a fixed point");
  return undefined;
}

/** No decoding was lossy (invalid UTF-8 becomes U+FFFD), so re-encoding must give the same bytes. */
const lossless = (...texts: string[]): boolean => texts.every((t) => !t.includes("\uFFFD"));

function neverThrowsOtherwise<T>(
  input: fc.Arbitrary<Buffer>,
  parse: Parser<T>,
  reencode?: (v: T, original: Buffer) => Buffer | undefined,
): void {
  fc.assert(
    fc.property(input, (buf) => {
      let parsed: ReturnType<Parser<T>>;
      try {
        parsed = parse(buf);
      } catch (err) {
        if (err instanceof ProtocolError) return;
        throw err;
      }
      if (parsed === undefined) return;
      assert.ok(parsed.consumed > 0 && parsed.consumed <= buf.length, `consumed ${parsed.consumed}`);
      const again = reencode?.(parsed.value, buf);
      if (again) assert.deepEqual(again, buf.subarray(0, parsed.consumed), "parsed bytes are canonical");
    }),
    RUNS,
  );
}

describe("random bytes give 'need more', a value, or a ProtocolError: never another exception", () => {
  const methods = fc.array(byte, { minLength: 1, maxLength: 255 });
  test("parseGreeting", () =>
    neverThrowsOtherwise(hostile(methods.map((m) => encodeGreeting({ methods: m }))), parseGreeting, (g) =>
      encodeGreeting(g),
    ));
  test("parseMethodSelection", () =>
    neverThrowsOtherwise(
      hostile(byte.map(encodeMethodSelection)),
      parseMethodSelection,
      encodeMethodSelection,
    ));
  const addressText = (a: SocksAddress): string[] => (a.type === "domain" ? [a.host] : []);
  test("parseRequest", () =>
    neverThrowsOtherwise(
      hostile(fc.oneof(address, replyAddress).map((a) => encodeRequest({ command: "connect", address: a }))),
      parseRequest,
      // A DOMAINNAME is normalised, so only its normal form is a fixed point, not its bytes.
      (r, original) => (original[3] === 3 ? fixedPoint(r, encodeRequest, parseRequest) : encodeRequest(r)),
    ));
  test("parseReply", () =>
    neverThrowsOtherwise(hostile(replyAddress.map((a) => encodeReply(0, a))), parseReply, (r) =>
      lossless(...addressText(r.address)) ? encodeReply(r.reply, r.address) : undefined,
    ));
  test("parseUserPassRequest", () =>
    neverThrowsOtherwise(
      hostile(rec(fc.record({ username: text255, password: text255 })).map(encodeUserPassRequest)),
      parseUserPassRequest,
      (c) => (lossless(c.username, c.password) ? encodeUserPassRequest(c) : undefined),
    ));
  test("parseUserPassReply", () =>
    neverThrowsOtherwise(hostile(fc.boolean().map(encodeUserPassReply)), parseUserPassReply));
  test("parseSocks4Request", () =>
    neverThrowsOtherwise(
      hostile(socks4Request.map(encodeSocks4Request)),
      parseSocks4Request,
      (r, original) => {
        if (!lossless(r.userId)) return undefined;
        const socks4a = original[4] === 0 && original[5] === 0 && original[6] === 0 && original[7] !== 0;
        if (socks4a) {
          // The name is normalised; a literal one becomes an address (IPv6 even, which SOCKS4 cannot write).
          return r.address.type === "domain"
            ? fixedPoint(r, encodeSocks4Request, parseSocks4Request)
            : undefined;
        }
        const again = encodeSocks4Request(r);
        // Any 0.0.0.x (x != 0) marks SOCKS4a; the encoder always writes 0.0.0.1.
        if (r.address.type === "domain") again[7] = original[7]!;
        return again;
      },
    ));
  test("parseSocks4Reply", () =>
    neverThrowsOtherwise(
      hostile(fc.tuple(byte, ipv4, port).map(([r, h, p]) => encodeSocks4Reply(r, h, p))),
      parseSocks4Reply,
      (r) => encodeSocks4Reply(r.reply, r.host, r.port),
    ));
  test("parseUdpDatagram (whole datagrams: a value or a ProtocolError)", () =>
    fc.assert(
      fc.property(
        hostile(
          fc
            .tuple(fc.oneof(address, replyAddress), byte)
            .map(([a, f]) => encodeUdpDatagram({ frag: f, address: a, data: Buffer.from("x") })),
        ),
        (buf) => {
          try {
            const d = parseUdpDatagram(buf);
            assert.ok(d.data.length <= buf.length);
          } catch (err) {
            if (!(err instanceof ProtocolError)) throw err;
          }
        },
      ),
      RUNS,
    ));
  test("sniffProtocol never throws", () =>
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 16 }), (b) => {
        const s = sniffProtocol(b);
        if (b.length > 0 && (b[0] === 4 || b[0] === 5))
          assert.equal(s?.kind, b[0] === 4 ? "socks4" : "socks5");
      }),
      RUNS,
    ));
});
