import assert from "node:assert/strict";
import type os from "node:os";
import { test } from "node:test";
import type { Config } from "../../src/config/schema.js";
import { placementIn } from "../../src/dial/announce.js";
import { addressOf } from "../../src/protocol/address.js";
import { clientSource, fromClient } from "../../src/server/udp-source.js";

// This host, for the test: loopback plus one interface with an address of each family.
const mine = new Set(["127.0.0.1", "::1", "192.0.2.10", "2001:db8::10"]);
const isLocal = (ip: string): boolean => mine.has(ip) || ip.startsWith("127.");
const at = (host: string, port = 5000) => addressOf(host, port);

test("the client's declared family is followed only for a client on this host", () => {
  const same = (peer: string) => ({ family: peer.includes(":") ? 6 : 4, ip: peer, crossFamily: false });
  assert.deepEqual(clientSource(at("::1"), "127.0.0.1", isLocal), {
    family: 6,
    ip: "::1",
    crossFamily: true,
  });
  assert.deepEqual(clientSource(at("127.0.0.1"), "::1", isLocal), {
    family: 4,
    ip: "127.0.0.1",
    crossFamily: true,
  });
  assert.deepEqual(clientSource(at("::"), "127.0.0.1", isLocal), {
    family: 6,
    ip: undefined,
    crossFamily: true,
  });
  // All zeros of IPv4 is "not known yet", not a family.
  assert.deepEqual(clientSource(at("0.0.0.0"), "::1", isLocal), same("::1"));
  // A remote client's other address cannot be checked; nor an address that is not this host's.
  assert.deepEqual(clientSource(at("2001:db8::99"), "192.0.2.99", isLocal), same("192.0.2.99"));
  assert.deepEqual(clientSource(at("::"), "192.0.2.99", isLocal), same("192.0.2.99"));
  assert.deepEqual(clientSource(at("2001:db8::99"), "127.0.0.1", isLocal), same("127.0.0.1"));
  assert.deepEqual(clientSource(at("localhost"), "127.0.0.1", isLocal), same("127.0.0.1"));
  assert.deepEqual(clientSource(at("127.0.0.1"), "127.0.0.1", isLocal), same("127.0.0.1"));
});

test("a source is the client's: the one pinned IP, or before that one of this host's of the family", () => {
  assert.equal(fromClient({ family: 6, ip: "::1", crossFamily: true }, "::1", isLocal), true);
  assert.equal(fromClient({ family: 6, ip: "::1", crossFamily: true }, "2001:db8::10", isLocal), false);
  assert.equal(fromClient({ family: 6, ip: undefined, crossFamily: true }, "2001:db8::10", isLocal), true);
  assert.equal(fromClient({ family: 6, ip: undefined, crossFamily: true }, "2001:db8::99", isLocal), false);
  assert.equal(fromClient({ family: 4, ip: "192.0.2.99", crossFamily: false }, "192.0.2.98", isLocal), false);
});

test("the relay of the other family: the external address, the other loopback, the same interface, the declared address", () => {
  const interfaces = {
    lo: [{ address: "127.0.0.1" }, { address: "::1" }],
    eth0: [{ address: "192.0.2.10" }, { address: "fe80::1" }, { address: "2001:db8::10" }],
    eth1: [{ address: "198.51.100.1" }],
  } as unknown as NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  const config = (external?: Config["external"]) => ({ external }) as Config;
  const here = (host: string) => ({ listenHost: host, announceHost: host });
  assert.deepEqual(placementIn(config(), "127.0.0.1", 6, undefined, interfaces), here("::1"));
  assert.deepEqual(placementIn(config(), "::1", 4, "127.0.0.1", interfaces), here("127.0.0.1"));
  assert.deepEqual(placementIn(config(), "192.0.2.10", 6, undefined, interfaces), here("2001:db8::10"));
  assert.deepEqual(
    placementIn(config(), "198.51.100.1", 6, "2001:db8::10", interfaces),
    here("2001:db8::10"),
  );
  assert.equal(placementIn(config(), "198.51.100.1", 6, undefined, interfaces), undefined);
  // A configured external address of the family wins; one this host lacks is a NAT's, announced only.
  assert.deepEqual(placementIn(config({ ipv6: "::1" }), "127.0.0.1", 6, undefined, interfaces), here("::1"));
  assert.deepEqual(placementIn(config({ ipv6: "2001:db8::beef" }), "127.0.0.1", 6, undefined, interfaces), {
    listenHost: "::",
    announceHost: "2001:db8::beef",
  });
  // The same family is placement() unchanged.
  assert.deepEqual(placementIn(config(), "127.0.0.1", 4, undefined, interfaces), here("127.0.0.1"));
});
