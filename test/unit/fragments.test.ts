import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { parsePortRange } from "../../src/config/units.js";
import { DnsCache } from "../../src/dial/dns-cache.js";
import { addressOf } from "../../src/protocol/address.js";
import { MAX_UDP_PAYLOAD, Reassembler } from "../../src/protocol/fragments.js";
import type { UdpDatagram } from "../../src/protocol/udp.js";

const to = addressOf("192.0.2.1", 53);
const frag = (n: number, data: string, address = to): UdpDatagram => ({
  frag: n,
  address,
  data: Buffer.from(data),
});

test("a standalone datagram passes straight through", () => {
  const r = new Reassembler();
  const out = r.push(frag(0, "whole"));
  assert.equal(out.datagram?.data.toString(), "whole");
  assert.equal(out.dropped, 0);
  assert.equal(r.pending, false);
});

test("fragments 1, 2, 0x83 reassemble into one datagram for the first fragment's destination", () => {
  const r = new Reassembler();
  assert.deepEqual(r.push(frag(1, "ab")), { dropped: 0, reason: undefined, started: true });
  assert.equal(r.pending, true);
  assert.deepEqual(r.push(frag(2, "cd")), { dropped: 0, started: false });
  assert.equal(r.queuedBytes, 4);
  const out = r.push(frag(0x83, "ef"));
  assert.deepEqual(out.datagram, { frag: 0, address: to, data: Buffer.from("abcdef") });
  assert.equal(r.pending, false);
  assert.equal(r.queuedBytes, 0);
});

test("0x81 is a sequence of one", () => {
  const out = new Reassembler().push(frag(0x81, "solo"));
  assert.equal(out.datagram?.data.toString(), "solo");
  assert.equal(out.datagram?.frag, 0);
});

test("a lower position abandons the queue; position 1 then starts a new sequence", () => {
  const r = new Reassembler();
  r.push(frag(1, "a"));
  r.push(frag(2, "b"));
  r.push(frag(3, "c"));
  const lower = r.push(frag(2, "x"));
  assert.deepEqual(lower, { dropped: 4, reason: "out of order", started: false });
  assert.equal(r.pending, false);
  const restart = r.push(frag(1, "n"));
  r.push(frag(2, "e"));
  assert.equal(restart.started, true);
  assert.equal(r.push(frag(0x83, "w")).datagram?.data.toString(), "new");
  // A repeat of the highest position is not progress either.
  r.push(frag(1, "a"));
  assert.equal(r.push(frag(1, "a")).dropped, 1, "the old 1 is abandoned; the new 1 starts over");
  assert.equal(r.pending, true);
});

test("a standalone datagram abandons a pending sequence and is still delivered", () => {
  const r = new Reassembler();
  r.push(frag(1, "a"));
  const out = r.push(frag(0, "z"));
  assert.equal(out.datagram?.data.toString(), "z");
  assert.equal(out.dropped, 1);
  assert.equal(r.pending, false);
});

test("gaps, position 0x80, a changed destination and fragments with no sequence are dropped", () => {
  const r = new Reassembler();
  assert.deepEqual(r.push(frag(2, "b")), { dropped: 1, reason: "missing fragment", started: false });
  r.push(frag(1, "a"));
  assert.deepEqual(r.push(frag(3, "c")), { dropped: 2, reason: "missing fragment", started: false });
  assert.equal(r.push(frag(0x80, "?")).reason, "invalid position");
  r.push(frag(1, "a"));
  assert.deepEqual(r.push(frag(2, "b", addressOf("192.0.2.2", 53))), {
    dropped: 2,
    reason: "destination changed",
    started: false,
  });
});

test("the timer's expiry abandons the queue", () => {
  const r = new Reassembler();
  r.push(frag(1, "a"));
  r.push(frag(2, "b"));
  assert.equal(r.expire(), 2);
  assert.equal(r.pending, false);
  assert.equal(r.push(frag(0x83, "c")).reason, "missing fragment");
});

test("the bytes queued never exceed the bound, whatever fragments arrive", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({ frag: fc.integer({ min: 0, max: 255 }), size: fc.integer({ min: 0, max: 300 }) }),
        {
          maxLength: 300,
        },
      ),
      (pushes) => {
        const r = new Reassembler(1000);
        for (const p of pushes) {
          const out = r.push({ frag: p.frag, address: to, data: Buffer.alloc(p.size) });
          assert.ok(r.queuedBytes <= 1000);
          if (out.datagram) assert.ok(out.datagram.data.length <= 1000);
        }
      },
    ),
    { numRuns: 300 },
  );
  const r = new Reassembler();
  assert.equal(r.maxBytes, MAX_UDP_PAYLOAD);
  r.push({ frag: 1, address: to, data: Buffer.alloc(40_000) });
  assert.deepEqual(r.push({ frag: 2, address: to, data: Buffer.alloc(40_000) }), {
    dropped: 2,
    reason: "too large",
    started: false,
  });
  assert.equal(r.queuedBytes, 0);
  assert.equal(r.push({ frag: 1, address: to, data: Buffer.alloc(MAX_UDP_PAYLOAD + 1) }).reason, "too large");
});

test("relayPorts parses LOW-HIGH and refuses nonsense", () => {
  assert.deepEqual(parsePortRange("40000-40999"), { low: 40000, high: 40999 });
  assert.deepEqual(parsePortRange("5000"), { low: 5000, high: 5000 });
  for (const bad of ["0-10", "10-5", "1-70000", "a-b", ""])
    assert.throws(() => parsePortRange(bad), /port range/);
});

test("the UDP name cache looks a name up once, shares lookups in flight, and is bounded", async () => {
  let lookups = 0;
  const cache = new DnsCache(2, 60_000, 10_000, async (host) => {
    lookups++;
    if (host === "bad.invalid") throw new Error("ENOTFOUND");
    return [`192.0.2.${lookups}`];
  });
  const [a, b] = await Promise.all([cache.lookup("one.test"), cache.lookup("ONE.test")]);
  assert.deepEqual(a, b);
  assert.equal(lookups, 1);
  await cache.lookup("one.test");
  assert.equal(lookups, 1);
  await assert.rejects(cache.lookup("bad.invalid"));
  await assert.rejects(cache.lookup("bad.invalid"));
  assert.equal(lookups, 2, "a failure is remembered too");
  await cache.lookup("three.test");
  assert.equal(cache.size, 2);
});

test("announced addresses: the control connection's local address, or the configured external one", async () => {
  const { placement } = await import("../../src/dial/announce.js");
  const { validateConfig } = await import("../../src/config/load.js");
  const base = { ...validateConfig({}, "test"), inlineUsers: [] };
  assert.deepEqual(placement(base, "127.0.0.1"), { listenHost: "127.0.0.1", announceHost: "127.0.0.1" });
  assert.deepEqual(placement({ ...base, external: { ipv4: "203.0.113.5" } }, "10.0.0.1"), {
    listenHost: "0.0.0.0",
    announceHost: "203.0.113.5",
  });
  assert.deepEqual(placement({ ...base, external: { ipv6: "2001:db8::5" } }, "::1").listenHost, "::");
  assert.deepEqual(
    placement({ ...base, external: { ipv4: "127.0.0.2" } }, "127.0.0.1"),
    { listenHost: "127.0.0.2", announceHost: "127.0.0.2" },
    "an external address this host has is opened on, not only announced",
  );
  assert.deepEqual(
    placement({ ...base, external: { ipv4: "127.0.0.2" } }, "::1"),
    { listenHost: "::1", announceHost: "::1" },
    "no external address of the client's family: the control connection's own",
  );
  assert.equal(validateConfig({}, "t").timeouts.bind, 120_000, "BIND waits 2 minutes by default");
  assert.equal(validateConfig({ timeouts: { bind: "30s" } }, "t").timeouts.bind, 30_000);
  assert.throws(() => validateConfig({ timeouts: { fragment: "1s" } }, "t"), /at least 5s/);
  assert.throws(() => validateConfig({ external: "example.com" }, "t"), /external/);
});
