import assert from "node:assert/strict";
import { test } from "node:test";
import { chainFromFlags } from "../../src/cli/proxy-option.js";
import { runEnvironment } from "../../src/cli/run.js";
import { describeHop, parseChain, parseProxyUrl, proxyFromEnv } from "../../src/index.js";

test("?protection= lists the GSSAPI levels a client offers, in order of preference", () => {
  const url = "socks5h://proxy.example.com:1080?gssapi=rcmd&protection=integrity,confidentiality";
  const hop = parseProxyUrl(url);
  assert.deepEqual(hop.gssapi, { service: "rcmd", protection: ["integrity", "confidentiality"] });
  assert.equal(describeHop(hop), url, "describeHop writes it back");
  assert.deepEqual(parseProxyUrl("socks5h://p?gssapi&protection=none").gssapi, {
    service: "rcmd",
    protection: ["none"],
  });
  assert.deepEqual(
    parseProxyUrl("socks5h://p?protection=confidentiality%2C%20integrity,integrity&gssapi=rcmd").gssapi
      ?.protection,
    ["confidentiality", "integrity"],
    "encoded commas and spaces are read; a repeat counts once",
  );
  // Without ?protection= nothing is set: the client's default (confidentiality, integrity) applies.
  assert.equal(parseProxyUrl("socks5h://p?gssapi=rcmd").gssapi?.protection, undefined);
});

test("?protection= errors name the levels, and it needs ?gssapi", () => {
  assert.throws(
    () => parseProxyUrl("socks5h://p?gssapi=rcmd&protection=integrity,secret"),
    /unknown protection "secret"; use a comma-separated list of none, integrity, confidentiality/,
  );
  assert.throws(() => parseProxyUrl("socks5h://p?gssapi=rcmd&protection="), /unknown protection ""/);
  assert.throws(
    () => parseProxyUrl("socks5h://u:pw@p?protection=integrity"),
    /socks5h:\/\/u:\*\*\*@p\?protection=integrity: protection= applies to GSSAPI only; add gssapi=SERVICE/,
  );
});

test("a protection list's commas do not split a FERRY_PROXY chain, nor ferry run's", () => {
  const first = "socks5h://a:1?gssapi=rcmd&protection=integrity,confidentiality";
  assert.deepEqual(proxyFromEnv({ FERRY_PROXY: `${first},socks4://b:2` }), [first, "socks4://b:2"]);
  assert.deepEqual(proxyFromEnv({ FERRY_PROXY: `${first} socks5h://c:3?gssapi&protection=none` }), [
    first,
    "socks5h://c:3?gssapi&protection=none",
  ]);
  const env = runEnvironment(parseChain([first, "socks5h://c:3"]));
  const hops = chainFromFlags(undefined, { FERRY_PROXY: env.FERRY_PROXY });
  assert.deepEqual(hops.map(describeHop), [first, "socks5h://c:3"]);
});
