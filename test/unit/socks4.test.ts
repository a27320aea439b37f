import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Socks4Reply } from "../../src/protocol/errors.js";
import {
  encodeSocks4Reply,
  encodeSocks4Request,
  parseSocks4Reply,
  parseSocks4Request,
  type Socks4Request,
} from "../../src/protocol/socks4.js";
import { assertNeedsMoreAtEveryPrefix, assertProtocolError, hex, parseExactly } from "../helpers/codec.js";

const REJECTED = Socks4Reply.REJECTED;
/** Three 63-byte labels and one of 61: 253 bytes. */
const name253 = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;

describe("SOCKS4 and SOCKS4a request", () => {
  const cases: { name: string; request: Socks4Request; bytes: Buffer }[] = [
    {
      name: "SOCKS4 CONNECT with an empty USERID",
      request: { command: "connect", address: { type: "ipv4", host: "127.0.0.1", port: 80 }, userId: "" },
      bytes: hex("04 01 0050 7f000001 00"),
    },
    {
      name: "SOCKS4 BIND with a USERID",
      request: {
        command: "bind",
        address: { type: "ipv4", host: "198.51.100.7", port: 6667 },
        userId: "bob",
      },
      bytes: hex("04 02 1a0b c6336407 626f62 00"),
    },
    {
      name: "SOCKS4 with a 255-byte USERID",
      request: {
        command: "connect",
        address: { type: "ipv4", host: "10.0.0.1", port: 1 },
        userId: "u".repeat(255),
      },
      bytes: Buffer.concat([hex("04 01 0001 0a000001"), Buffer.from("u".repeat(255)), hex("00")]),
    },
    {
      name: "SOCKS4a CONNECT: 0.0.0.x marker, empty USERID, trailing hostname",
      request: {
        command: "connect",
        address: { type: "domain", host: "example.com", port: 443 },
        userId: "",
      },
      bytes: Buffer.concat([hex("04 01 01bb 00000001 00"), Buffer.from("example.com"), hex("00")]),
    },
    {
      name: "SOCKS4a with a USERID and a 253-byte hostname (the longest name)",
      request: {
        command: "connect",
        address: { type: "domain", host: name253, port: 8080 },
        userId: "alice",
      },
      bytes: Buffer.concat([
        hex("04 01 1f90 00000001"),
        Buffer.from("alice"),
        hex("00"),
        Buffer.from(name253),
        hex("00"),
      ]),
    },
  ];
  for (const c of cases) {
    test(`${c.name}: encodes, parses, and needs more at every truncation`, () => {
      assert.deepEqual(encodeSocks4Request(c.request), c.bytes);
      assert.deepEqual(parseExactly(parseSocks4Request, c.bytes), c.request);
      assertNeedsMoreAtEveryPrefix(parseSocks4Request, c.bytes);
    });
  }

  test("any 0.0.0.x with x != 0 is the SOCKS4a marker; 0.0.0.0 is a plain address", () => {
    const a = parseExactly(
      parseSocks4Request,
      Buffer.concat([hex("04 01 0050 000000ff 00"), Buffer.from("x"), hex("00")]),
    );
    assert.deepEqual(a.address, { type: "domain", host: "x", port: 80 });
    const b = parseExactly(parseSocks4Request, hex("04 01 0050 00000000 00"));
    assert.deepEqual(b.address, { type: "ipv4", host: "0.0.0.0", port: 80 });
    // 0.0.1.1 is an ordinary address, not the marker.
    const c = parseExactly(parseSocks4Request, hex("04 01 0050 00000101 00"));
    assert.deepEqual(c.address, { type: "ipv4", host: "0.0.1.1", port: 80 });
  });

  test("a wrong version gets 91", () => {
    assertProtocolError(
      () => parseSocks4Request(hex("05 01 0050 7f000001 00")),
      REJECTED,
      /version 4, got 5/,
    );
    assertProtocolError(() => parseSocks4Request(hex("03")), REJECTED);
  });

  test("an unknown command gets 91", () => {
    for (const cd of [0, 3, 0x5a, 0xff]) {
      assertProtocolError(() => parseSocks4Request(Buffer.from([4, cd, 0, 80, 127, 0, 0, 1, 0])), REJECTED);
      assertProtocolError(() => parseSocks4Request(Buffer.from([4, cd])), REJECTED);
    }
  });

  test("a USERID of more than 255 bytes without NUL gets 91; 255 bytes still needs more", () => {
    const head = hex("04 01 0050 7f000001");
    assert.equal(parseSocks4Request(Buffer.concat([head, Buffer.alloc(255, 0x75)])), undefined);
    assertProtocolError(
      () => parseSocks4Request(Buffer.concat([head, Buffer.alloc(256, 0x75)])),
      REJECTED,
      /USERID is longer than 255/,
    );
    assertProtocolError(() => parseSocks4Request(Buffer.concat([head, Buffer.alloc(4000, 0x75)])), REJECTED);
  });

  test("a SOCKS4a hostname of more than 255 bytes without NUL gets 91", () => {
    const head = hex("04 01 0050 00000001 626f6200");
    assert.equal(parseSocks4Request(Buffer.concat([head, Buffer.alloc(255, 0x68)])), undefined);
    assertProtocolError(
      () => parseSocks4Request(Buffer.concat([head, Buffer.alloc(256, 0x68)])),
      REJECTED,
      /hostname is longer than 255/,
    );
  });

  test("SOCKS4a hostnames are checked like SOCKS5 names: 91 with the bytes escaped, or normalised", () => {
    const head = hex("04 01 0050 00000001 00");
    const parse = (name: string | Buffer) =>
      parseSocks4Request(Buffer.concat([head, Buffer.from(name), hex("00")]));
    assertProtocolError(
      () => parse("localhost\n"),
      REJECTED,
      /^invalid host name "localhost\\x0a": byte "\\x0a" at 9 is not allowed in a host name$/,
    );
    assertProtocolError(
      () => parse(Buffer.from("68c3a9", "hex")),
      REJECTED,
      /"h\\xc3\\xa9": non-ASCII byte 0xc3 at 1/,
    );
    for (const bad of ["127.1", "2130706433", "0x7f.1", "a..b", "-a", "h".repeat(254)])
      assertProtocolError(() => parse(bad), REJECTED, /^invalid host name/);
    assert.deepEqual(parse("LocalHost.")?.value.address, { type: "domain", host: "localhost", port: 80 });
    assert.deepEqual(parse("127.0.0.1")?.value.address, { type: "ipv4", host: "127.0.0.1", port: 80 });
    assert.deepEqual(parse("::1")?.value.address, { type: "ipv6", host: "::1", port: 80 });
    // The client's encoder sends what it is given: only the server's parse checks.
    const sent = encodeSocks4Request({
      command: "connect",
      address: { type: "domain", host: "Example.COM.", port: 80 },
      userId: "",
    });
    assert.deepEqual(sent.subarray(9, -1), Buffer.from("Example.COM."));
  });

  test("an empty SOCKS4a hostname gets 91", () => {
    assertProtocolError(
      () => parseSocks4Request(hex("04 01 0050 00000001 00 00")),
      REJECTED,
      /empty SOCKS4a/,
    );
  });

  test("the encoder refuses what SOCKS4 cannot carry", () => {
    const ipv4 = { type: "ipv4" as const, host: "127.0.0.1", port: 80 };
    assert.throws(
      () => encodeSocks4Request({ command: "connect", address: ipv4, userId: "x".repeat(256) }),
      RangeError,
    );
    assert.throws(
      () => encodeSocks4Request({ command: "connect", address: ipv4, userId: "a\0b" }),
      RangeError,
    );
    assert.throws(
      () =>
        encodeSocks4Request({
          command: "connect",
          address: { type: "ipv6", host: "::1", port: 80 },
          userId: "",
        }),
      RangeError,
    );
    for (const host of ["", "h".repeat(256), "a\0b"]) {
      assert.throws(
        () =>
          encodeSocks4Request({
            command: "connect",
            address: { type: "domain", host, port: 80 },
            userId: "",
          }),
        RangeError,
      );
    }
    // 0.0.0.x would be read back as the SOCKS4a marker: the encoder must not produce it for an address.
    assert.throws(
      () =>
        encodeSocks4Request({
          command: "connect",
          address: { type: "ipv4", host: "0.0.0.7", port: 80 },
          userId: "",
        }),
      RangeError,
    );
  });
});

describe("SOCKS4 reply", () => {
  test("granted and rejected replies encode and parse to the byte", () => {
    const granted = hex("00 5a 1f90 7f000001");
    assert.deepEqual(encodeSocks4Reply(Socks4Reply.GRANTED, "127.0.0.1", 8080), granted);
    assert.deepEqual(parseExactly(parseSocks4Reply, granted), { reply: 90, host: "127.0.0.1", port: 8080 });
    assertNeedsMoreAtEveryPrefix(parseSocks4Reply, granted);
    const rejected = hex("00 5b 0000 00000000");
    assert.deepEqual(encodeSocks4Reply(REJECTED), rejected);
    assert.deepEqual(parseExactly(parseSocks4Reply, rejected), { reply: 91, host: "0.0.0.0", port: 0 });
  });

  test("a reply whose VN is not 0 is a ProtocolError", () => {
    assertProtocolError(() => parseSocks4Reply(hex("04 5a 0000 00000000")), undefined, /must be 0/);
  });
});
