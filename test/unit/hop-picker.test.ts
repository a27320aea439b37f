import assert from "node:assert/strict";
import { test } from "node:test";
import type { Hop, Upstream } from "../../src/config/routes.js";
import { orderAddresses } from "../../src/dial/family.js";
import { HopPicker } from "../../src/dial/hop-picker.js";

const u = (name: string): Upstream => ({ name, protocol: "socks5", host: "127.0.0.1", port: 1 });
const names = (list: Upstream[]) => list.map((x) => x.name).join(",");

test("failover tries members in order and moves a failed one back until retryAfter passes", () => {
  let now = 1000;
  const picker = new HopPicker(() => now);
  const hop: Hop = { members: [u("a"), u("b"), u("c")], mode: "failover", retryAfterMs: 5000 };
  assert.equal(names(picker.candidates(hop)), "a,b,c");
  picker.failed(hop.members[0]!, hop);
  assert.equal(names(picker.candidates(hop)), "b,c,a");
  now += 4999;
  assert.equal(names(picker.candidates(hop)), "b,c,a", "still within retryAfter");
  now += 1;
  assert.equal(names(picker.candidates(hop)), "a,b,c", "a is tried first again once retryAfter passed");
  picker.failed(hop.members[1]!, hop);
  picker.succeeded(hop.members[1]!);
  assert.equal(names(picker.candidates(hop)), "a,b,c", "a success clears the mark");
  for (const m of hop.members) picker.failed(m, hop);
  assert.equal(names(picker.candidates(hop)), "a,b,c", "all down: still tried, in order");
});

test("round-robin starts each connection at the next member, skipping failed ones", () => {
  const picker = new HopPicker(() => 0);
  const hop: Hop = { members: [u("a"), u("b"), u("c")], mode: "round-robin", retryAfterMs: 1000 };
  assert.deepEqual(
    [1, 2, 3, 4].map(() => picker.candidates(hop)[0]!.name),
    ["a", "b", "c", "a"],
  );
  picker.failed(hop.members[1]!, hop);
  assert.equal(names(picker.candidates(hop)), "c,a,b", "b (due now) goes to the back");
});

test("address order: RFC 8305 interleaving from the preferred family, *-only filters", () => {
  const list = [
    { address: "192.0.2.1", family: 4 },
    { address: "192.0.2.2", family: 4 },
    { address: "2001:db8::1", family: 6 },
  ];
  const order = (p: Parameters<typeof orderAddresses>[1]) =>
    orderAddresses(list, p)
      .map((a) => a.address)
      .join(" ");
  assert.equal(order("system"), "192.0.2.1 2001:db8::1 192.0.2.2");
  assert.equal(order("ipv6-first"), "2001:db8::1 192.0.2.1 192.0.2.2");
  assert.equal(order("ipv4-first"), "192.0.2.1 2001:db8::1 192.0.2.2");
  assert.equal(order("ipv4-only"), "192.0.2.1 192.0.2.2");
  assert.equal(order("ipv6-only"), "2001:db8::1");
  assert.deepEqual(orderAddresses([list[0]!], "ipv6-only"), []);
});
