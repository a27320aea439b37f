import assert from "node:assert/strict";
import { chmod, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { chainsHops, isNodeProgram, proxychainsConfig } from "../../src/cli/proxychains.js";
import { proxychainsEnvironment } from "../../src/cli/run.js";
import { parseChain } from "../../src/client/proxy.js";
import { tempDir } from "../helpers/process.js";

test("the proxychains4 configuration lists the whole chain in order, credentials included", async () => {
  const hops = await chainsHops(
    parseChain([
      "socks4a://app@127.0.0.1:1081",
      "socks5h://localhost:1082",
      "socks5h://gina:s3cret@127.0.0.9:1083",
    ]),
  );
  assert.equal(
    proxychainsConfig(hops, true),
    [
      "# written by ferry run for one command; removed when it exits",
      "strict_chain",
      "proxy_dns",
      "remote_dns_subnet 224",
      "tcp_read_time_out 15000",
      "tcp_connect_time_out 8000",
      "[ProxyList]",
      "socks4 127.0.0.1 1081 app",
      // Names are resolved here: proxychains4 reads numeric IPv4 only.
      "socks5 127.0.0.1 1082",
      "socks5 127.0.0.9 1083 gina s3cret",
      "",
    ].join("\n"),
  );
  assert.doesNotMatch(proxychainsConfig(hops, false), /proxy_dns/);
});

test("what proxychains4 cannot express is refused with the reason", async () => {
  await assert.rejects(chainsHops(parseChain(["socks5h://a:b%20c@127.0.0.1:1"])), /white space/);
  await assert.rejects(chainsHops(parseChain(["socks5h://a@127.0.0.1:1"])), /needs a password/);
  await assert.rejects(chainsHops(parseChain(["socks5h://[::1]:1"])), /IPv4 addresses only/);
  await assert.rejects(chainsHops(parseChain(["socks5h://127.0.0.1:1?gssapi=rcmd"])), /GSSAPI/);
});

test("Node programs are told from others by the binary's name or the script's #! line", async () => {
  const dir = await tempDir("ferry-isnode-");
  try {
    const scripts: [string, string, boolean][] = [
      ["npm-like", "#!/usr/bin/env node\nconsole.log(1)\n", true],
      ["direct", "#!/usr/local/bin/node --enable-source-maps\n", true],
      ["shell", "#!/bin/sh\necho node\n", false],
      ["python", "#!/usr/bin/python3\n", false],
    ];
    for (const [name, text] of scripts) {
      await writeFile(join(dir.path, name), text);
      await chmod(join(dir.path, name), 0o755);
    }
    const env = { PATH: dir.path };
    for (const [name, , node] of scripts) assert.equal(isNodeProgram(name, env), node, name);
    assert.equal(isNodeProgram(process.execPath), true);
    assert.equal(isNodeProgram("/bin/sh"), false);
    assert.equal(isNodeProgram("no-such-program", env), false);
  } finally {
    await dir.remove();
  }
});

test("under proxychains the child loses every proxy variable, so nothing is proxied twice", () => {
  const env = proxychainsEnvironment({
    PATH: "/bin",
    ALL_PROXY: "x",
    https_proxy: "y",
    FERRY_PROXY: "z",
    HOME: "/h",
  });
  assert.deepEqual(env, { PATH: "/bin", HOME: "/h" });
});
