import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ipv6Text } from "../../src/protocol/address.js";
import { ProtocolError } from "../../src/protocol/errors.js";
import {
  detectProxyHeader,
  encodeProxyV1,
  encodeProxyV2,
  type ProxyEndpoints,
  parseProxyHeader,
  V1_MAX_LENGTH,
  V2_MAX_LENGTH,
} from "../../src/protocol/proxy-protocol.js";
import { assertNeedsMoreAtEveryPrefix, assertProtocolError, hex, parseExactly } from "../helpers/codec.js";

const SIG = "0d0a0d0a000d0a515549540a";
const text = (s: string): Buffer => Buffer.from(s, "latin1");

const V4: ProxyEndpoints = {
  family: "ipv4",
  sourceAddress: "192.0.2.7",
  sourcePort: 51234,
  destinationAddress: "127.0.0.1",
  destinationPort: 1080,
};
const V6: ProxyEndpoints = {
  family: "ipv6",
  sourceAddress: "2001:db8::7",
  sourcePort: 443,
  destinationAddress: "::1",
  destinationPort: 1080,
};

describe("PROXY v1", () => {
  test("TCP4 parses, stops at the CRLF, and needs more at every prefix", () => {
    const line = text("PROXY TCP4 192.0.2.7 127.0.0.1 51234 1080\r\n");
    assert.deepEqual(encodeProxyV1(V4), line);
    assert.deepEqual(parseExactly(parseProxyHeader, line), { version: 1, command: "proxy", endpoints: V4 });
    assertNeedsMoreAtEveryPrefix(parseProxyHeader, line);
  });

  test("TCP6 parses", () => {
    const line = text("PROXY TCP6 2001:db8::7 ::1 443 1080\r\n");
    assert.deepEqual(encodeProxyV1(V6), line);
    assert.deepEqual(parseExactly(parseProxyHeader, line).endpoints, V6);
    assertNeedsMoreAtEveryPrefix(parseProxyHeader, line);
  });

  test("UNKNOWN names no client, with or without the rest of the line", () => {
    assert.deepEqual(parseExactly(parseProxyHeader, text("PROXY UNKNOWN\r\n")), {
      version: 1,
      command: "proxy",
    });
    const long = text("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n");
    assert.equal(parseExactly(parseProxyHeader, long).endpoints, undefined);
  });

  test("a line of exactly 107 bytes is taken; without CRLF by then it is refused", () => {
    const pad = "x".repeat(V1_MAX_LENGTH - "PROXY UNKNOWN \r\n".length);
    const longest = text(`PROXY UNKNOWN ${pad}\r\n`);
    assert.equal(longest.length, V1_MAX_LENGTH);
    assert.ok(parseProxyHeader(longest));
    assertProtocolError(
      () => parseProxyHeader(text(`PROXY UNKNOWN ${pad}x\r\n`)),
      undefined,
      /longer than 107/,
    );
    // No CRLF at all: refused as soon as 107 bytes are there, not buffered further.
    assertProtocolError(() => parseProxyHeader(text(`PROXY TCP4 ${"1".repeat(200)}`)), undefined, /longer/);
  });

  const bad: [string, string, RegExp][] = [
    ["LF without CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", /CRLF/],
    ["unknown protocol", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", /not TCP4/],
    ["missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", /5 fields/],
    ["extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", /5 fields/],
    ["IPv6 in TCP4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", /not TCP4/],
    ["IPv4 in TCP6", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", /not TCP6/],
    ["port out of range", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /port/],
    ["leading zero port", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", /port/],
    ["double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", /5 fields|not TCP4/],
    ["lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", /expected a PROXY/],
    ["PROXY without space", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", /expected a PROXY/],
  ];
  for (const [name, line, message] of bad) {
    test(`refused: ${name}`, () =>
      assertProtocolError(() => parseProxyHeader(text(line)), undefined, message));
  }
});

describe("PROXY v2", () => {
  test("PROXY TCP over IPv4, byte for byte", () => {
    const bytes = hex(`${SIG} 21 11 000c c0000207 7f000001 c822 0438`);
    assert.deepEqual(encodeProxyV2(V4), bytes);
    assert.deepEqual(parseExactly(parseProxyHeader, bytes), { version: 2, command: "proxy", endpoints: V4 });
    assertNeedsMoreAtEveryPrefix(parseProxyHeader, bytes);
  });

  test("PROXY TCP over IPv6", () => {
    const bytes = hex(
      `${SIG} 21 21 0024 20010db8000000000000000000000007 00000000000000000000000000000001 01bb 0438`,
    );
    assert.deepEqual(encodeProxyV2(V6), bytes);
    assert.deepEqual(parseExactly(parseProxyHeader, bytes).endpoints, V6);
    assertNeedsMoreAtEveryPrefix(parseProxyHeader, bytes);
  });

  test("TLVs are skipped whole, whatever they hold", () => {
    // ALPN "h2", an authority, a NOOP padding, and a type nobody has defined.
    const tlvs = hex("01 0002 6832  02 0009 6578616d706c652e6f  04 0003 000000  ee 0001 ff");
    const bytes = encodeProxyV2(V4, tlvs);
    assert.equal(bytes.readUInt16BE(14), 12 + tlvs.length);
    assert.deepEqual(parseExactly(parseProxyHeader, bytes).endpoints, V4);
    assertNeedsMoreAtEveryPrefix(parseProxyHeader, bytes);
    // A malformed TLV area is still skipped by the length: it is never interpreted.
    const junk = encodeProxyV2(V4, hex("ff ffff"));
    assert.deepEqual(parseExactly(parseProxyHeader, junk).endpoints, V4);
  });

  test("LOCAL names no client, with or without an address block", () => {
    const bare = hex(`${SIG} 20 00 0000`);
    assert.deepEqual(encodeProxyV2(), bare);
    assert.deepEqual(parseExactly(parseProxyHeader, bare), { version: 2, command: "local" });
    const withBlock = hex(`${SIG} 20 11 000c c0000207 7f000001 c822 0438`);
    assert.deepEqual(parseExactly(parseProxyHeader, withBlock), { version: 2, command: "local" });
  });

  test("UNSPEC, UNIX and UDP families name no client but are whole headers", () => {
    assert.equal(parseExactly(parseProxyHeader, hex(`${SIG} 21 00 0000`)).endpoints, undefined);
    const unix = Buffer.concat([hex(`${SIG} 21 31 00d8`), Buffer.alloc(216, 0x61)]);
    assert.deepEqual(parseExactly(parseProxyHeader, unix), { version: 2, command: "proxy" });
    assertNeedsMoreAtEveryPrefix(parseProxyHeader, unix);
    const udp = hex(`${SIG} 21 12 000c c0000207 7f000001 c822 0438`);
    assert.equal(parseExactly(parseProxyHeader, udp).endpoints, undefined);
  });

  const bad: [string, string, RegExp][] = [
    ["version 1 in the binary form", `${SIG} 11 11 000c`, /version 1/],
    ["command 2", `${SIG} 22 11 000c`, /command 2/],
    ["family 4", `${SIG} 21 41 000c`, /not defined/],
    ["transport 3", `${SIG} 21 13 000c`, /not defined/],
    ["length shorter than the IPv4 block", `${SIG} 21 11 000b`, /shorter/],
    ["length shorter than the IPv6 block", `${SIG} 21 21 0023`, /shorter/],
    ["length shorter than the UNIX block", `${SIG} 21 31 00d7`, /shorter/],
    ["signature broken in its middle", "0d0a0d0a000d0a5156", /expected a PROXY/],
  ];
  for (const [name, bytes, message] of bad) {
    test(`refused: ${name}`, () =>
      assertProtocolError(() => parseProxyHeader(hex(bytes)), undefined, message));
  }

  test("an oversize length is refused from the fixed part alone, before the rest arrives", () => {
    const over = V2_MAX_LENGTH - 16 + 1;
    const head = Buffer.concat([hex(`${SIG} 21 11`), Buffer.from([over >> 8, over & 0xff])]);
    assertProtocolError(() => parseProxyHeader(head), undefined, /more than/);
    const most = V2_MAX_LENGTH - 16;
    const biggest = encodeProxyV2(V4, Buffer.alloc(most - 12));
    assert.equal(biggest.length, V2_MAX_LENGTH);
    assert.ok(parseProxyHeader(biggest));
  });
});

describe("anything else", () => {
  test("SOCKS, HTTP and garbage are not PROXY headers", () => {
    for (const b of [
      hex("05 01 00"),
      hex("04 01 0050 7f000001 00"),
      text("GET / HTTP/1.1\r\n"),
      hex("00"),
      hex("ff"),
    ])
      assertProtocolError(() => parseProxyHeader(b), undefined, /expected a PROXY/);
    assert.equal(parseProxyHeader(Buffer.alloc(0)), undefined);
  });

  test("detectProxyHeader decides on the first byte that differs", () => {
    assert.equal(detectProxyHeader(hex("05")), "no");
    assert.equal(detectProxyHeader(hex("04")), "no");
    assert.equal(detectProxyHeader(text("POST ")), "no");
    assert.equal(detectProxyHeader(text("PRO")), "maybe");
    assert.equal(detectProxyHeader(text("PROXY")), "maybe");
    assert.equal(detectProxyHeader(text("PROXY ")), "yes");
    assert.equal(detectProxyHeader(hex("0d0a0d0a00")), "maybe");
    assert.equal(detectProxyHeader(hex(SIG)), "yes");
    assert.equal(detectProxyHeader(hex("0d0a0d0a01")), "no");
  });
});

describe("properties", () => {
  const port = fc.integer({ min: 0, max: 65535 });
  const v4 = fc.ipV4();
  const v6 = fc
    .ipV6()
    .map((a) => ipv6Text(Buffer.from(encodeProxyV2({ ...V6, sourceAddress: a }).subarray(16, 32))));
  const endpoints: fc.Arbitrary<ProxyEndpoints> = fc.oneof(
    fc.record({
      family: fc.constant("ipv4" as const),
      sourceAddress: v4,
      destinationAddress: v4,
      sourcePort: port,
      destinationPort: port,
    }),
    fc.record({
      family: fc.constant("ipv6" as const),
      sourceAddress: v6,
      destinationAddress: v6,
      sourcePort: port,
      destinationPort: port,
    }),
  );

  test("every header encoded parses back, in whatever pieces it arrives", () => {
    fc.assert(
      fc.property(
        endpoints,
        fc.boolean(),
        fc.uint8Array({ maxLength: 40 }),
        fc.integer({ min: 1, max: 200 }),
        (e, v1, tlv, cut) => {
          const bytes = v1 ? encodeProxyV1(e) : encodeProxyV2(e, tlv);
          const whole = parseProxyHeader(Buffer.concat([bytes, hex("0501 00")]));
          assert.ok(whole);
          assert.equal(whole.consumed, bytes.length);
          assert.deepEqual({ ...whole.value.endpoints }, { ...e });
          assert.equal(parseProxyHeader(bytes.subarray(0, Math.min(cut, bytes.length - 1))), undefined);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("arbitrary bytes give a header, need more, or a ProtocolError; never anything else", () => {
    const prefix = fc.constantFrom(
      Buffer.alloc(0),
      text("PROXY "),
      text("PROXY TCP4 "),
      hex(SIG),
      hex(`${SIG} 21`),
    );
    fc.assert(
      fc.property(prefix, fc.uint8Array({ maxLength: 300 }), (p, rest) => {
        const buf = Buffer.concat([p, rest]);
        try {
          const r = parseProxyHeader(buf);
          if (r) assert.ok(r.consumed > 0 && r.consumed <= buf.length);
        } catch (err) {
          assert.ok(err instanceof ProtocolError, String(err));
        }
      }),
      { numRuns: 3000 },
    );
  });
});
