import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { loadConfig } from "../../src/config/load.js";
import { tempDir } from "../helpers/process.js";

test("the example in docs/routes.md loads as documented", async () => {
  const doc = await readFile("docs/routes.md", "utf8");
  const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(yaml, "docs/routes.md starts with a yaml example");
  const dir = await tempDir("ferry-routes-doc-");
  const saved = process.env.CORP_PW;
  try {
    await writeFile(join(dir.path, "ferry.yaml"), yaml);
    await writeFile(join(dir.path, "web.pw"), "web-secret\n", { mode: 0o600 });
    process.env.CORP_PW = "corp-secret";
    const config = await loadConfig({ file: join(dir.path, "ferry.yaml") });
    const routes = config.routes!.routes;
    const members = (name: string) =>
      routes.get(name)!.hops.map((h) => h.members.map((m) => m.name).join("|"));
    assert.deepEqual(members("outside"), ["dmz", "corp"]);
    assert.deepEqual(members("resilient"), ["dmz|dmz2", "corp"]);
    assert.equal(config.routes!.upstreams.get("corp")!.password!.reveal(), "corp-secret");
    assert.equal(config.routes!.upstreams.get("web")!.password!.reveal(), "web-secret");
    assert.deepEqual(config.external, { ipv4: "192.0.2.10", ipv6: "2001:db8::10" });
    assert.deepEqual(
      config.rules!.map((r) => r.via),
      ["corp", "outside"],
    );
  } finally {
    if (saved === undefined) delete process.env.CORP_PW;
    else process.env.CORP_PW = saved;
    await dir.remove();
  }
});
