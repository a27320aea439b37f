import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import ipaddr from "ipaddr.js";
import { clientGroup } from "../../src/auth/login-guard.js";
import { familyOf } from "../../src/dial/announce.js";
import { isLoopback, normalizeIp } from "../../src/policy/addresses.js";
import { addressOf, ipv4Bytes, isPlainIpv4, isUnspecifiedIp } from "../../src/protocol/address.js";

// The fast paths taken for plain dotted quads must answer exactly as ipaddr.js did before them.

/** Text that is often nearly a dotted quad: digits and dots, with the odd other character. */
const quadish = fc.oneof(
  fc
    .array(fc.oneof(fc.nat(300).map(String), fc.constantFrom("00", "01", "007", "1e1", "0x1", "", " 1")), {
      minLength: 1,
      maxLength: 6,
    })
    .map((parts) => parts.join(".")),
  fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join(".")),
  fc.string({ maxLength: 16 }),
  fc.constantFrom("0.0.0.0", "127.0.0.1", "255.255.255.255", "1.2.3.4.", ".1.2.3.4", "::ffff:1.2.3.4", "::1"),
);

test("isPlainIpv4 is ipaddr.js's valid four-part decimal, and the fast paths agree with ipaddr.js", () => {
  fc.assert(
    fc.property(quadish, (s) => {
      const plain = ipaddr.IPv4.isValidFourPartDecimal(s);
      assert.equal(isPlainIpv4(s), plain, s);
      if (!plain) return;
      const ip = ipaddr.process(s);
      assert.deepEqual([...ipv4Bytes(s)], ip.toByteArray(), s);
      assert.equal(normalizeIp(s), ip.toString(), s);
      assert.equal(isLoopback(s), ip.range() === "loopback", s);
      assert.equal(isUnspecifiedIp(s), (ip as ipaddr.IPv4).octets[0] === 0, s);
      assert.equal(clientGroup(s), ip.toString(), s);
      assert.equal(familyOf(s), 4, s);
      assert.deepEqual(addressOf(s, 1), { type: "ipv4", host: s, port: 1 }, s);
    }),
    { numRuns: 5000 },
  );
});

test("what is not a plain dotted quad still goes through ipaddr.js", () => {
  assert.equal(normalizeIp("::ffff:10.0.0.1"), "10.0.0.1");
  assert.equal(isLoopback("::ffff:127.0.0.2"), true);
  assert.equal(isLoopback("::1"), true);
  assert.equal(isUnspecifiedIp("::ffff:0.1.2.3"), true);
  assert.equal(isUnspecifiedIp("[::]"), true);
  assert.equal(familyOf("::1"), 6);
  assert.equal(addressOf("010.0.0.1", 1).type, "domain");
  assert.throws(() => ipv4Bytes("1.2.3.04"), RangeError);
});
