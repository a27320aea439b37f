import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { encodeAddress, isUnspecifiedIp, parseAddress } from "../../src/protocol/address.js";
import { ProtocolError, Reply } from "../../src/protocol/errors.js";
import { checkHostName, escapeBytes, readHostName } from "../../src/protocol/hostname.js";
import { assertProtocolError } from "../helpers/codec.js";
import { nameLikeBytes, normalHostName } from "../helpers/names.js";

const RUNS = { numRuns: 3000 };
const l63 = "a".repeat(63);
/** 253 bytes: three 63-byte labels and one of 61. */
const n253 = `${l63}.${l63}.${l63}.${"b".repeat(61)}`;

describe("host names a server accepts, and the form everyone downstream sees", () => {
  const accepted: [string, string, ("domain" | "ipv4" | "ipv6")?][] = [
    ["localhost", "localhost"],
    ["LOCALHOST.", "localhost"],
    ["Example.COM", "example.com"],
    ["example.com.", "example.com"],
    ["a", "a"],
    ["_srv._tcp.example.com", "_srv._tcp.example.com"],
    ["a_.b-c.d", "a_.b-c.d"],
    ["xn--bcher-kva.example", "xn--bcher-kva.example"],
    ["XN--BCHER-KVA.example", "xn--bcher-kva.example"],
    ["0x.example", "0x.example"],
    ["123.example", "123.example"],
    ["1a", "1a"],
    ["0x7g", "0x7g"],
    [`${l63}.com`, `${l63}.com`],
    [n253, n253],
    [`${n253}.`, n253],
    ["127.0.0.1", "127.0.0.1", "ipv4"],
    ["127.0.0.1.", "127.0.0.1", "ipv4"],
    ["0.0.0.0", "0.0.0.0", "ipv4"],
    ["0", "0.0.0.0", "ipv4"],
    ["255.255.255.255", "255.255.255.255", "ipv4"],
    ["::1", "::1", "ipv6"],
    ["[::1]", "::1", "ipv6"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1", "ipv6"],
    ["::ffff:127.0.0.1", "::ffff:7f00:1", "ipv6"],
    // The IPv4-compatible form keeps its meaning (ipaddr.js alone would read it as mapped).
    ["::1.2.3.4", "::102:304", "ipv6"],
  ];
  for (const [sent, host, type = "domain"] of accepted) {
    test(`${JSON.stringify(sent)} -> ${type} ${host}`, () => {
      assert.deepEqual(checkHostName(Buffer.from(sent, "latin1")), { ok: true, type, host });
    });
  }
});

describe("host names a server refuses, and why", () => {
  const refused: [string | Buffer, string][] = [
    ["localhost\0", "NUL byte at 9"],
    ["localhost\0anything", "NUL byte at 9"],
    ["localhost\0.example.com", "NUL byte at 9"],
    ["\0", "NUL byte at 0"],
    [
      Buffer.from("627563686572c3a9", "hex"),
      "non-ASCII byte 0xc3 at 6 (send internationalised names as xn--)",
    ],
    [Buffer.from("ff", "hex"), "non-ASCII byte 0xff at 0 (send internationalised names as xn--)"],
    ["local host", 'byte " " at 5 is not allowed in a host name'],
    ["localhost\n", 'byte "\\x0a" at 9 is not allowed in a host name'],
    ["a%b", 'byte "%" at 1 is not allowed in a host name'],
    ["a/b", 'byte "/" at 1 is not allowed in a host name'],
    ["fe80::1%eth0", 'byte ":" at 4 is not allowed in a host name'],
    ["a:b", "not a valid IPv6 address"],
    ["1::2::3", "not a valid IPv6 address"],
    ["::ffff:127.1", "not a valid IPv6 address"],
    ["[::1", 'byte "[" at 0 is not allowed in a host name'],
    [".", "empty label at 0"],
    ["..", "empty label at 0"],
    [".example.com", "empty label at 0"],
    ["a..b", "empty label at 2"],
    ["example.com..", "empty label at 12"],
    ["-a.com", "label at 0 starts with a hyphen"],
    ["a.b-.com", "label at 2 ends with a hyphen"],
    ["a.-", "label at 2 starts with a hyphen"],
    [`${l63}a.com`, "label at 0 is 64 bytes long, at most 63"],
    [`${n253}b`, "254 bytes long, at most 253"],
    [`${n253}b.`, "254 bytes long, at most 253"],
    // Numbers that getaddrinfo reads as addresses: 0.0.0.0, 127.0.0.1 in legacy spellings.
    ["2130706433", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["127.1", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["0x7f.1", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["0X7F000001", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["017700000001", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["127.0.0.01", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["256.0.0.1", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["1.2.3.4.5", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["example.123", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["example.0x", "a number that is not a dotted-quad IPv4 address (resolvers read it as one)"],
    ["", "empty"],
  ];
  for (const [sent, why] of refused) {
    const bytes = typeof sent === "string" ? Buffer.from(sent, "latin1") : sent;
    test(`${JSON.stringify(escapeBytes(bytes)).slice(0, 60)}: ${why}`, () => {
      assert.deepEqual(checkHostName(bytes), { ok: false, why });
    });
  }

  test("the error shows the bytes escaped, with the caller's reply code", () => {
    assertProtocolError(
      () => readHostName(Buffer.from("localhost\0anything"), Reply.HOST_UNREACHABLE),
      Reply.HOST_UNREACHABLE,
      /^invalid host name "localhost\\x00anything": NUL byte at 9$/,
    );
    assertProtocolError(
      () => readHostName(Buffer.from('a"b\\c\x7f'), 91),
      91,
      /^invalid host name "a\\"b\\\\c\\x7f": byte "\\"" at 1 is not allowed in a host name$/,
    );
  });
});

describe("host name properties", () => {
  test("an accepted name is [a-z0-9._-] only, re-checks to itself, and round-trips through encode/parse", () =>
    fc.assert(
      fc.property(nameLikeBytes, fc.integer({ min: 0, max: 0xffff }), (bytes, port) => {
        const r = checkHostName(bytes);
        if (!r.ok) return;
        if (r.type === "domain") {
          assert.match(r.host, /^[a-z0-9._-]+$/);
          assert.ok(r.host.length <= 253 && !r.host.endsWith("."));
        }
        assert.deepEqual(checkHostName(Buffer.from(r.host)), r, "normal form is a fixed point");
        const address = { type: r.type, host: r.host, port };
        const wire = encodeAddress(address);
        assert.deepEqual(parseAddress(wire, 0), { address, next: wire.length });
      }),
      RUNS,
    ));

  test("names already in normal form are accepted unchanged", () =>
    fc.assert(
      fc.property(normalHostName, (host) => {
        assert.deepEqual(checkHostName(Buffer.from(host)), { ok: true, type: "domain", host });
      }),
      RUNS,
    ));

  test("a rejected name never parses; any bytes give an address or a ProtocolError", () =>
    fc.assert(
      fc.property(
        nameLikeBytes.filter((b) => b.length >= 1 && b.length <= 255),
        (bytes) => {
          const wire = Buffer.concat([Buffer.from([3, bytes.length]), bytes, Buffer.from([0, 80])]);
          const ok = checkHostName(bytes).ok;
          try {
            const parsed = parseAddress(wire, 0);
            assert.ok(ok && parsed?.next === wire.length);
          } catch (err) {
            if (!(err instanceof ProtocolError)) throw err;
            assert.ok(!ok);
            assert.equal(err.reply, Reply.HOST_UNREACHABLE);
            assert.ok(err.message.startsWith(`invalid host name "${escapeBytes(bytes)}": `));
          }
        },
      ),
      RUNS,
    ));

  test("checkHostName never throws", () =>
    fc.assert(
      fc.property(nameLikeBytes, (bytes) => {
        checkHostName(bytes);
      }),
      RUNS,
    ));
});

describe("isUnspecifiedIp", () => {
  const yes = ["0.0.0.0", "0.1.2.3", "0.255.255.255", "::", "[::]", "0:0:0:0:0:0:0:0", "::ffff:0.0.0.0"];
  const more = ["::ffff:0.255.1.1", "::ffff:0:0", "::0.0.0.0", "0"];
  const no = [
    "1.0.0.0",
    "127.0.0.1",
    "::1",
    "::ffff:1.0.0.0",
    "::ffff:127.0.0.1",
    "localhost",
    "",
    "0.example",
  ];
  test("0.0.0.0/8, :: and ::ffff:0.0.0.0/104 are unspecified, in any spelling", () => {
    for (const h of [...yes, ...more]) assert.equal(isUnspecifiedIp(h), true, h);
  });
  test("other addresses and names are not", () => {
    for (const h of no) assert.equal(isUnspecifiedIp(h), false, h);
  });
});
