import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { encodeAddress, type SocksAddress } from "../../src/protocol/address.js";
import { Reply } from "../../src/protocol/errors.js";
import {
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  Method,
  parseGreeting,
  parseMethodSelection,
  parseReply,
  parseRequest,
} from "../../src/protocol/socks5.js";
import { assertNeedsMoreAtEveryPrefix, assertProtocolError, hex, parseExactly } from "../helpers/codec.js";

const domain255 = [..."abcd"].map((c) => c.repeat(63)).join(".");
/** The longest name a server accepts: 253 bytes. */
const domain253 = domain255.slice(0, 253);

describe("SOCKS5 greeting and method selection", () => {
  test("greeting encodes and parses to the byte", () => {
    const bytes = hex("05 03 00 01 02");
    assert.deepEqual(encodeGreeting({ methods: [0, 1, 2] }), bytes);
    assert.deepEqual(parseExactly(parseGreeting, bytes), { methods: [0, 1, 2] });
    assertNeedsMoreAtEveryPrefix(parseGreeting, bytes);
  });

  test("a greeting with 255 methods is whole", () => {
    const methods = Array.from({ length: 255 }, (_, i) => i);
    const bytes = Buffer.from([5, 255, ...methods]);
    assert.deepEqual(encodeGreeting({ methods }), bytes);
    assert.deepEqual(parseExactly(parseGreeting, bytes).methods, methods);
    assertNeedsMoreAtEveryPrefix(parseGreeting, bytes);
  });

  test("NMETHODS 0 is refused with 0xFF (no acceptable methods)", () => {
    assertProtocolError(() => parseGreeting(hex("05 00")), Method.NO_ACCEPTABLE, /no authentication methods/);
  });

  test("a greeting with the wrong version is a ProtocolError with nothing to reply", () => {
    // No SOCKS5 reply format is agreed with a peer that is not speaking SOCKS5.
    assertProtocolError(() => parseGreeting(hex("04 01 00")), undefined, /version 5, got 4/);
  });

  test("method selection encodes and parses to the byte", () => {
    assert.deepEqual(encodeMethodSelection(Method.USERPASS), hex("05 02"));
    assert.deepEqual(encodeMethodSelection(Method.NO_ACCEPTABLE), hex("05 ff"));
    assert.equal(parseExactly(parseMethodSelection, hex("05 00")), 0);
    assert.equal(parseExactly(parseMethodSelection, hex("05 ff")), 0xff);
    assertNeedsMoreAtEveryPrefix(parseMethodSelection, hex("05 02"));
    assertProtocolError(() => parseMethodSelection(hex("04 00")), undefined);
  });

  test("the encoder refuses greetings it cannot express", () => {
    assert.throws(() => encodeGreeting({ methods: [] }), RangeError);
    assert.throws(() => encodeGreeting({ methods: Array.from({ length: 256 }, () => 0) }), RangeError);
  });
});

describe("SOCKS5 request", () => {
  const cases: { name: string; command: "connect" | "bind" | "udp"; address: SocksAddress; bytes: Buffer }[] =
    [
      {
        name: "CONNECT IPv4",
        command: "connect",
        address: { type: "ipv4", host: "127.0.0.1", port: 80 },
        bytes: hex("05 01 00 01 7f000001 0050"),
      },
      {
        name: "BIND IPv4 with the highest port",
        command: "bind",
        address: { type: "ipv4", host: "192.0.2.255", port: 65535 },
        bytes: hex("05 02 00 01 c00002ff ffff"),
      },
      {
        name: "UDP ASSOCIATE with the unspecified address and port 0",
        command: "udp",
        address: { type: "ipv4", host: "0.0.0.0", port: 0 },
        bytes: hex("05 03 00 01 00000000 0000"),
      },
      {
        name: "CONNECT IPv6",
        command: "connect",
        address: { type: "ipv6", host: "2001:db8::1", port: 443 },
        bytes: hex("05 01 00 04 20010db8000000000000000000000001 01bb"),
      },
      {
        name: "CONNECT ::1",
        command: "connect",
        address: { type: "ipv6", host: "::1", port: 1 },
        bytes: hex("05 01 00 04 00000000000000000000000000000001 0001"),
      },
      {
        name: "CONNECT a one-byte domain",
        command: "connect",
        address: { type: "domain", host: "a", port: 8080 },
        bytes: hex("05 01 00 03 01 61 1f90"),
      },
      {
        name: "CONNECT a 253-byte domain",
        command: "connect",
        address: { type: "domain", host: domain253, port: 443 },
        bytes: Buffer.concat([hex("05 01 00 03 fd"), Buffer.from(domain253), hex("01bb")]),
      },
    ];

  for (const c of cases) {
    test(`${c.name}: encodes, parses, and needs more at every truncation`, () => {
      assert.deepEqual(encodeRequest({ command: c.command, address: c.address }), c.bytes);
      assert.deepEqual(parseExactly(parseRequest, c.bytes), { command: c.command, address: c.address });
      assertNeedsMoreAtEveryPrefix(parseRequest, c.bytes);
    });
  }

  test("a wrong version gets 0x01 (general failure)", () => {
    assertProtocolError(() => parseRequest(hex("04 01 00 01 7f000001 0050")), Reply.GENERAL_FAILURE);
    // Detected from the first byte, without waiting for the rest.
    assertProtocolError(() => parseRequest(hex("06")), Reply.GENERAL_FAILURE);
  });

  test("an unknown command gets 0x07 (command not supported)", () => {
    for (const cmd of [0x00, 0x04, 0x7f, 0xff]) {
      assertProtocolError(
        () => parseRequest(Buffer.from([5, cmd, 0, 1, 127, 0, 0, 1, 0, 80])),
        Reply.COMMAND_NOT_SUPPORTED,
      );
      assertProtocolError(() => parseRequest(Buffer.from([5, cmd])), Reply.COMMAND_NOT_SUPPORTED);
    }
  });

  test("a non-zero RSV gets 0x01", () => {
    for (const rsv of [0x01, 0x80, 0xff]) {
      assertProtocolError(
        () => parseRequest(Buffer.from([5, 1, rsv, 1, 127, 0, 0, 1, 0, 80])),
        Reply.GENERAL_FAILURE,
        /reserved/,
      );
    }
  });

  test("an unknown ATYP gets 0x08 (address type not supported)", () => {
    for (const atyp of [0x00, 0x02, 0x05, 0xff]) {
      assertProtocolError(
        () => parseRequest(Buffer.from([5, 1, 0, atyp, 127, 0, 0, 1, 0, 80])),
        Reply.ADDRESS_TYPE_NOT_SUPPORTED,
      );
      assertProtocolError(() => parseRequest(Buffer.from([5, 1, 0, atyp])), Reply.ADDRESS_TYPE_NOT_SUPPORTED);
    }
  });

  test("a zero-length domain gets 0x01", () => {
    assertProtocolError(
      () => parseRequest(hex("05 01 00 03 00 0050")),
      Reply.GENERAL_FAILURE,
      /empty domain/,
    );
    assertProtocolError(() => parseRequest(hex("05 01 00 03 00")), Reply.GENERAL_FAILURE);
  });

  test("DOMAINNAME is checked: 0x04 with the bytes escaped in the message", () => {
    const request = (name: Buffer) =>
      Buffer.concat([hex("05 01 00 03"), Buffer.from([name.length]), name, hex("0050")]);
    assertProtocolError(
      () => parseRequest(request(Buffer.from("localhost\0anything"))),
      Reply.HOST_UNREACHABLE,
      /^invalid host name "localhost\\x00anything": NUL byte at 9$/,
    );
    assertProtocolError(
      () => parseRequest(request(Buffer.from("localhost\0.example.com"))),
      Reply.HOST_UNREACHABLE,
      /NUL byte at 9/,
    );
    // 255 bytes fit the length byte but not DNS: the encoder sends it, the server refuses it.
    const long = encodeRequest({
      command: "connect",
      address: { type: "domain", host: domain255, port: 80 },
    });
    assertProtocolError(() => parseRequest(long), Reply.HOST_UNREACHABLE, /255 bytes long, at most 253/);
  });

  test("DOMAINNAME is normalised: lower case, no trailing dot, literals become addresses", () => {
    const parsed = (host: string) =>
      parseExactly(
        parseRequest,
        encodeRequest({ command: "connect", address: { type: "domain", host, port: 1 } }),
      ).address;
    assert.deepEqual(parsed("Example.COM."), { type: "domain", host: "example.com", port: 1 });
    assert.deepEqual(parsed("127.0.0.1"), { type: "ipv4", host: "127.0.0.1", port: 1 });
    assert.deepEqual(parsed("[2001:DB8::1]"), { type: "ipv6", host: "2001:db8::1", port: 1 });
    // What was sent is what encodeRequest wrote: the client side does not rewrite names.
    assert.deepEqual(
      encodeAddress({ type: "domain", host: "Example.COM.", port: 1 }),
      Buffer.concat([hex("03 0c"), Buffer.from("Example.COM."), hex("0001")]),
    );
  });

  test("the encoder refuses domains of 0 or 256 bytes and bad ports", () => {
    const bad: SocksAddress[] = [
      { type: "domain", host: "", port: 80 },
      { type: "domain", host: "x".repeat(256), port: 80 },
      // 128 two-byte characters: 256 bytes of UTF-8 although only 128 characters.
      { type: "domain", host: "é".repeat(128), port: 80 },
      { type: "ipv4", host: "127.0.0.1", port: 65536 },
      { type: "ipv4", host: "127.0.0.1", port: -1 },
      { type: "ipv4", host: "127.0.0.1", port: 1.5 },
      { type: "ipv4", host: "::1", port: 80 },
    ];
    for (const address of bad)
      assert.throws(() => encodeRequest({ command: "connect", address }), RangeError);
  });
});

describe("SOCKS5 reply", () => {
  const cases: { name: string; reply: number; address: SocksAddress; bytes: Buffer }[] = [
    {
      name: "success with an IPv4 bound address",
      reply: 0,
      address: { type: "ipv4", host: "10.1.2.3", port: 40000 },
      bytes: hex("05 00 00 01 0a010203 9c40"),
    },
    {
      name: "success with an IPv6 bound address",
      reply: 0,
      address: { type: "ipv6", host: "fe80::1:2", port: 1080 },
      bytes: hex("05 00 00 04 fe800000000000000000000000010002 0438"),
    },
    {
      name: "connection refused with a one-byte domain",
      reply: Reply.CONNECTION_REFUSED,
      address: { type: "domain", host: "z", port: 0 },
      bytes: hex("05 05 00 03 01 7a 0000"),
    },
    {
      name: "host unreachable with a 255-byte domain",
      reply: Reply.HOST_UNREACHABLE,
      address: { type: "domain", host: domain255, port: 7 },
      bytes: Buffer.concat([hex("05 04 00 03 ff"), Buffer.from(domain255), hex("0007")]),
    },
  ];
  for (const c of cases) {
    test(`${c.name}: encodes, parses, and needs more at every truncation`, () => {
      assert.deepEqual(encodeReply(c.reply, c.address), c.bytes);
      assert.deepEqual(parseExactly(parseReply, c.bytes), { reply: c.reply, address: c.address });
      assertNeedsMoreAtEveryPrefix(parseReply, c.bytes);
    });
  }

  test("a reply's BND.ADDR name is taken as sent: the client chose that proxy", () => {
    const bytes = Buffer.concat([hex("05 00 00 03 0a"), Buffer.from("Relay.Test"), hex("0438")]);
    assert.deepEqual(parseExactly(parseReply, bytes).address, {
      type: "domain",
      host: "Relay.Test",
      port: 1080,
    });
  });

  test("a failure reply without an address carries 0.0.0.0:0", () => {
    assert.deepEqual(encodeReply(Reply.GENERAL_FAILURE), hex("05 01 00 01 00000000 0000"));
  });

  test("strictness: version, RSV, ATYP", () => {
    assertProtocolError(() => parseReply(hex("04 00 00 01 00000000 0000")), undefined);
    assertProtocolError(() => parseReply(hex("05 00 01 01 00000000 0000")), undefined, /reserved/);
    assertProtocolError(() => parseReply(hex("05 00 00 02 00000000 0000")), Reply.ADDRESS_TYPE_NOT_SUPPORTED);
  });

  test("the address codec alone is exact for every type", () => {
    assert.deepEqual(encodeAddress({ type: "ipv4", host: "1.2.3.4", port: 258 }), hex("01 01020304 0102"));
    assert.deepEqual(
      encodeAddress({ type: "ipv6", host: "::ffff:1.2.3.4", port: 1 }),
      hex("04 00000000000000000000ffff01020304 0001"),
    );
    assert.deepEqual(encodeAddress({ type: "domain", host: "ab", port: 65535 }), hex("03 02 6162 ffff"));
  });
});
