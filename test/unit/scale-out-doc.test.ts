import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { loadConfig } from "../../src/config/load.js";
import { tempDir } from "../helpers/process.js";

test("the examples in docs/scale-out.md load as documented", async () => {
  const doc = await readFile("docs/scale-out.md", "utf8");
  const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 2, "two yaml examples");
  const dir = await tempDir("ferry-scale-doc-");
  try {
    // The files the examples name and their shell lines make.
    await writeFile(join(dir.path, "admin.token"), "admin-token-1\n");
    const configs = [];
    for (const [i, yaml] of blocks.entries()) {
      const file = join(dir.path, `example-${i}.yaml`);
      await writeFile(file, yaml);
      configs.push(await loadConfig({ file }));
    }
    const [options, ferryA] = configs as [
      Awaited<ReturnType<typeof loadConfig>>,
      Awaited<ReturnType<typeof loadConfig>>,
    ];
    assert.deepEqual(
      options.listen.map((l) => [
        l.host,
        l.port,
        l.proxyProtocol?.from.map((c) => c.text),
        l.proxyProtocol?.allowDirect,
      ]),
      [
        ["10.0.0.21", 1080, ["10.0.0.5/32", "10.0.0.6/32"], false],
        ["127.0.0.1", 1081, undefined, undefined],
      ],
    );
    assert.equal(ferryA.listen[0]!.port, 10801);
    assert.equal(ferryA.listen[0]!.proxyProtocol!.allowDirect, false);
  } finally {
    await dir.remove();
  }
});

test("listen entries: unknown keys and an empty proxyProtocol.from are refused with the key", async () => {
  const dir = await tempDir("ferry-listen-");
  try {
    const cases: [string, RegExp][] = [
      [
        'listen: [{ address: "127.0.0.1:1080", proxyProtocl: { from: [127.0.0.1] } }]',
        /listen\.0\.proxyProtocl: unknown key \(did you mean "proxyProtocol"\?\)/,
      ],
      [
        'listen: [{ address: "127.0.0.1:1080", proxyProtocol: { from: [] } }]',
        /listen\.0\.proxyProtocol\.from: name the balancers/,
      ],
      [
        'listen: [{ address: "127.0.0.1:1080", proxyProtocol: { from: [nonsense] } }]',
        /listen\.0\.proxyProtocol\.from\.0: "nonsense" is not/,
      ],
      ['listen: [{ address: "127.0.0.1" }]', /listen\.0\.address: "127\.0\.0\.1" is not HOST:PORT/],
    ];
    for (const [yaml, message] of cases) {
      const file = join(dir.path, "ferry.yaml");
      await writeFile(file, `${yaml}\n`);
      await assert.rejects(loadConfig({ file }), message, yaml);
    }
  } finally {
    await dir.remove();
  }
});
