import assert from "node:assert/strict";
import { test } from "node:test";
import { parseForwardSpec } from "../../src/cli/forward.js";
import { chainFromFlags } from "../../src/cli/proxy-option.js";
import { runEnvironment } from "../../src/cli/run.js";
import { describeHop, parseChain, proxyFromEnv } from "../../src/index.js";

test("forward specs read like ssh -L, IPv6 in brackets", () => {
  assert.deepEqual(parseForwardSpec("8080:example.com:80"), {
    bindHost: "127.0.0.1",
    listenPort: 8080,
    host: "example.com",
    port: 80,
  });
  assert.deepEqual(parseForwardSpec("[::1]:0:[2001:db8::5]:443"), {
    bindHost: "::1",
    listenPort: 0,
    host: "2001:db8::5",
    port: 443,
  });
  assert.throws(() => parseForwardSpec("8080:example.com"), /expected \[BIND_ADDR:\]LISTEN_PORT:HOST:PORT/);
  assert.throws(() => parseForwardSpec("1:h:70000"), /invalid port/);
});

test("the proxy comes from flags, then FERRY_PROXY (a chain), then a socks ALL_PROXY", () => {
  assert.deepEqual(proxyFromEnv({ FERRY_PROXY: "socks5h://a:1, socks4://b:2" }), [
    "socks5h://a:1",
    "socks4://b:2",
  ]);
  assert.deepEqual(proxyFromEnv({ ALL_PROXY: "socks5://c:3" }), ["socks5://c:3"]);
  assert.equal(proxyFromEnv({ ALL_PROXY: "http://web-proxy:3128" }), undefined, "an HTTP proxy is not ours");
  assert.equal(proxyFromEnv({}), undefined);
  const hops = chainFromFlags(["socks4a://x:9"], { FERRY_PROXY: "socks5h://ignored:1" });
  assert.deepEqual(hops.map(describeHop), ["socks4a://x:9"]);
  assert.throws(() => chainFromFlags(undefined, {}), /no proxy given: pass --proxy/);
});

test("ferry run's environment: preload for Node, proxy variables for the rest, NODE_OPTIONS kept", () => {
  const env = runEnvironment(parseChain(["socks5h://u%40x:p%3Aw@127.0.0.1:1080", "socks4://10.0.0.2:1080"]), {
    NODE_OPTIONS: "--max-old-space-size=512",
  });
  assert.equal(env.FERRY_PROXY, "socks5h://u%40x:p%3Aw@127.0.0.1:1080,socks4://10.0.0.2:1080");
  assert.equal(
    parseChain(env.FERRY_PROXY!.split(","))[0]!.password,
    "p:w",
    "credentials survive the round trip",
  );
  assert.match(env.NODE_OPTIONS!, /^--max-old-space-size=512 --import "file:\/\/.*\/client\/preload\.js"$/);
  for (const name of ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]) {
    assert.equal(env[name], "socks5h://u%40x:p%3Aw@127.0.0.1:1080");
  }
});
