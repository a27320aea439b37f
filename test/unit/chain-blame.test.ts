import assert from "node:assert/strict";
import { test } from "node:test";
import { SocksError, type SocksStage } from "../../src/client/errors.js";
import { Secret } from "../../src/config/secret.js";
import { blame, toProxyHop } from "../../src/dial/chain.js";

const err = (stage: SocksStage, hop: number, reply?: number, version: 4 | 5 = 5) =>
  new SocksError("x", { stage, hop, proxy: "p", version, ...(reply !== undefined && { reply }) });

test("blame: which member of a three-hop chain failed, or none when the target did", () => {
  assert.equal(blame(err("connect", 0), 3), 0, "first proxy unreachable");
  assert.equal(blame(err("auth", 1), 3), 1, "credentials refused by the second");
  assert.equal(blame(err("negotiate", 2), 3), 2);
  assert.equal(blame(err("timeout", 1), 3), 1, "the hop that was talking when time ran out");
  assert.equal(blame(err("request", 0, 0x05), 3), 1, "hop 0 could not reach hop 1: hop 1 is down");
  assert.equal(blame(err("request", 1, 91, 4), 3), 2, "a SOCKS4 hop that cannot reach the next");
  assert.equal(blame(err("request", 0, 0x02), 3), 0, "hop 0 refuses by its rules: hop 0 will not carry us");
  assert.equal(blame(err("request", 1), 3), 1, "no reply at all: the hop itself is broken");
  assert.equal(blame(err("request", 2, 0x05), 3), undefined, "the target refused: no upstream at fault");
  assert.equal(blame(err("aborted", 0), 3), undefined, "the client went away");
  assert.equal(blame(new Error("other"), 3), undefined);
});

test("upstreams become client-library hops: version, remote DNS, HTTP, credentials revealed only here", () => {
  const base = { name: "n", host: "h", port: 1 };
  assert.deepEqual(toProxyHop({ ...base, protocol: "socks4", user: "id" }), {
    version: 4,
    remoteDns: false,
    host: "h",
    port: 1,
    username: "id",
  });
  assert.deepEqual(toProxyHop({ ...base, protocol: "socks4a" }), {
    version: 4,
    remoteDns: true,
    host: "h",
    port: 1,
  });
  assert.deepEqual(toProxyHop({ ...base, protocol: "socks5" }), {
    version: 5,
    remoteDns: false,
    host: "h",
    port: 1,
  });
  assert.deepEqual(toProxyHop({ ...base, protocol: "socks5h", user: "u", password: new Secret("pw") }), {
    version: 5,
    remoteDns: true,
    host: "h",
    port: 1,
    username: "u",
    password: "pw",
  });
  assert.equal(toProxyHop({ ...base, protocol: "http" }).http, true);
});
