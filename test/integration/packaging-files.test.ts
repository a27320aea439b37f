/**
 * The files that install Ferry as a service: the systemd unit (systemd-analyze verify), the man
 * pages (rendered by man -l), the bash completion, and the Dockerfile with its health check. No
 * container runtime runs here, so the image itself is not built: its COPY sources are checked.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../../src/config/load.js";
import { fdsNeeded } from "../../src/server/fd-budget.js";
import { FERRY_BIN, spawnFerry } from "../helpers/ferry-process.js";
import { waitFor } from "../helpers/net.js";
import { describeRun, run, tempDir } from "../helpers/process.js";
import { requireTool } from "../helpers/tools.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const unitPath = join(root, "packaging", "ferry.service");

/** The unit's `Key=value` lines of [Service], last one wins as in systemd. */
async function serviceKeys(): Promise<Map<string, string>> {
  const text = await readFile(unitPath, "utf8");
  const keys = new Map<string, string>();
  let section = "";
  for (const line of text.split("\n")) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) section = header[1] ?? "";
    const kv = /^(\w+)=(.*)$/.exec(line);
    if (kv && section === "Service") keys.set(kv[1] ?? "", kv[2] ?? "");
  }
  return keys;
}

describe("packaging files", { timeout: 120_000 }, () => {
  let work: { path: string; remove: () => Promise<void> };
  before(async () => {
    work = await tempDir("ferry-packaging-");
  });
  after(async () => {
    await work?.remove();
  });

  it("the systemd unit passes systemd-analyze verify, with no warning", async (t) => {
    if (!requireTool(t, "systemd-analyze", "systemd")) return;
    // verify insists that ExecStart's program exists: point it at this checkout's bin/ferry.
    const unit = (await readFile(unitPath, "utf8")).replace(/^ExecStart=\S+/m, `ExecStart=${FERRY_BIN}`);
    const copy = join(work.path, "ferry.service");
    await writeFile(copy, unit);
    // --man=no: the man pages are checked below, and are not installed in the system's MANPATH.
    const r = await run("systemd-analyze", ["verify", "--man=no", copy], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stderr.trim(), "", "systemd-analyze warned");
  });

  it("the unit reloads with SIGHUP, is hardened, and allows the files the default limits need", async () => {
    const keys = await serviceKeys();
    assert.equal(keys.get("ExecReload"), "/bin/kill -HUP $MAINPID");
    for (const [key, value] of [
      ["NoNewPrivileges", "yes"],
      ["ProtectSystem", "strict"],
      ["PrivateTmp", "yes"],
      ["DynamicUser", "yes"],
      ["CapabilityBoundingSet", ""],
    ]) {
      assert.equal(keys.get(key as string), value, key);
    }
    const needed = fdsNeeded(await loadConfig({}));
    assert.ok(Number(keys.get("LimitNOFILE")) >= needed, `LimitNOFILE below the ${needed} the defaults need`);
  });

  for (const page of ["ferry.1", "ferry.yaml.5"]) {
    it(`man -l renders ${page}`, async (t) => {
      if (!requireTool(t, "man", "man-db")) return;
      const build = await run(process.execPath, [join(root, "scripts/build-man.mjs")], { timeoutMs: 60_000 });
      assert.equal(build.code, 0, describeRun(build));
      const r = await run("man", ["-l", join(root, "man", page)], {
        env: { ...process.env, MANPAGER: "cat", PAGER: "cat", MANWIDTH: "100" },
        timeoutMs: 60_000,
      });
      assert.equal(r.code, 0, describeRun(r));
      const text = r.stdout.toString();
      assert.match(text, page === "ferry.1" ? /^FERRY\(1\)/ : /^FERRY\.YAML\(5\)/);
      assert.match(text, /\nNAME\n/);
      // ferry(1) lists every command from the CLI's own definition; ferry.yaml(5) the keys.
      const expected =
        page === "ferry.1" ? ["ferry serve", "ferry users add", "ferry doctor"] : ["timeouts:", "rules:"];
      for (const e of expected) assert.ok(text.includes(e), `${page} lacks "${e}"`);
    });
  }

  it("bash completion completes commands and their flags", async (t) => {
    if (!requireTool(t, "bash", "bash")) return;
    const complete = (words: string[]) =>
      run(
        "bash",
        [
          "-c",
          `source <("${process.execPath}" "${FERRY_BIN}" completion bash) && COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}) && COMP_CWORD=${words.length - 1} && _ferry_complete && echo "\${COMPREPLY[@]}"`,
        ],
        { timeoutMs: 30_000 },
      );
    const top = await complete(["ferry", "se"]);
    assert.equal(top.stdout.toString().trim(), "serve", describeRun(top));
    const flags = await complete(["ferry", "serve", "--con"]);
    assert.deepEqual(flags.stdout.toString().trim().split(" ").sort(), ["--config", "--control"]);
    const nested = await complete(["ferry", "users", "add", "--p"]);
    assert.equal(nested.stdout.toString().trim(), "--password-stdin");
  });

  it("the Dockerfile's COPY sources exist and the image's configuration is valid", async () => {
    const dockerfile = await readFile(join(root, "packaging", "Dockerfile"), "utf8");
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) =>
      (m[1] ?? "").split(" "),
    );
    assert.ok(sources.length >= 5, "no COPY lines found");
    for (const s of sources) assert.ok(existsSync(join(root, s)), `COPY ${s}: no such file in the checkout`);
    assert.match(dockerfile, /^USER (?!root)\w+/m);
    assert.match(dockerfile, /^HEALTHCHECK /m);
    const check = await run(process.execPath, [
      FERRY_BIN,
      "check",
      "--config",
      join(root, "packaging/docker/ferry.yaml"),
    ]);
    assert.equal(check.code, 0, describeRun(check));
  });

  it("the health check passes against a serving Ferry's /healthz and fails once it has stopped", async (t) => {
    const probe = join(root, "packaging", "healthcheck.mjs");
    const ferry = await spawnFerry({
      config: (listen) => ({ listen: [listen], admin: { listen: "127.0.0.1:0" } }),
    });
    t.after(() => ferry.stop());
    // Logged a moment after the SOCKS listener's line, which spawnFerry waits for.
    const adminLine = () => ferry.logs().find((l) => l.event === "admin.listen");
    await waitFor(() => adminLine() !== undefined, 10_000, "the admin listener's line");
    const admin = String(adminLine()!.admin);
    const ok = await run(process.execPath, [probe, admin], { timeoutMs: 30_000 });
    assert.equal(ok.code, 0, describeRun(ok));
    await ferry.stop();
    const down = await run(process.execPath, [probe, admin], { timeoutMs: 30_000 });
    assert.equal(down.code, 1, describeRun(down));
    assert.match(down.stderr, /unhealthy/);
  });
});
