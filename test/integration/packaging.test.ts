/**
 * The npm package as a user gets it: `npm pack`, install the tarball into an empty folder, run
 * the installed `ferry serve` and carry a SOCKS session through it. A second install, whose
 * compiler fails (as on a machine without libkrb5-dev), must still succeed without GSSAPI.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { spawnFerry } from "../helpers/ferry-process.js";
import { startEchoServer } from "../helpers/net.js";
import { describeRun, type RunResult, run, tempDir } from "../helpers/process.js";
import { assertEchoThrough } from "../helpers/socks.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
/** What `npm install` needs to build the add-on here (as .ci/install-tools provides). */
const krb5Headers = existsSync("/usr/include/gssapi/gssapi_krb5.h");

/** The environment without the variables an outer `npm test` set (its package, its lifecycle). */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, ...extra };
}

async function npmInstall(dir: string, tarball: string, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  await writeFile(join(dir, "package.json"), JSON.stringify({ name: "app", private: true }));
  // --foreground-scripts so the install script's one line reaches the output, as a user sees it.
  const args = ["install", "--prefer-offline", "--no-audit", "--no-fund", "--foreground-scripts", tarball];
  return run("npm", args, { cwd: dir, env: cleanEnv(env), timeoutMs: 240_000 });
}

describe("the npm package", { timeout: 300_000 }, () => {
  let work: { path: string; remove: () => Promise<void> };
  let tarball: string;
  let files: string[];
  let installed: RunResult;
  let noCompiler: RunResult;
  const app = () => join(work.path, "app");
  const bare = () => join(work.path, "no-compiler");

  before(async () => {
    work = await tempDir("ferry-pack-");
    // `prepare` makes these when the package is packed; dist/ is already built for the tests.
    const man = await run(process.execPath, [join(root, "scripts/build-man.mjs")], { timeoutMs: 60_000 });
    assert.equal(man.code, 0, describeRun(man));
    const pack = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work.path], {
      cwd: root,
      env: cleanEnv(),
      timeoutMs: 120_000,
    });
    assert.equal(pack.code, 0, describeRun(pack));
    const [info] = JSON.parse(pack.stdout.toString()) as { filename: string; files: { path: string }[] }[];
    assert.ok(info);
    tarball = join(work.path, info.filename);
    files = info.files.map((f) => f.path);
    await run("mkdir", [app(), bare()]);
    // Both at once: they share npm's cache, and only the first compiles.
    [installed, noCompiler] = await Promise.all([
      npmInstall(app(), tarball),
      npmInstall(bare(), tarball, { CXX: "/bin/false", CC: "/bin/false" }),
    ]);
  });
  after(async () => {
    await work?.remove();
  });

  it("ships the built code, the native sources, man pages and packaging, not the tests", () => {
    for (const f of [
      "bin/ferry",
      "dist/src/cli/main.js",
      "dist/src/client/index.js",
      "dist/src/server/index.js",
      "native/gssapi/binding.gyp",
      "native/gssapi/gssapi.cc",
      "scripts/build-gssapi.mjs",
      "man/ferry.1",
      "man/ferry.yaml.5",
      "packaging/ferry.service",
      "packaging/healthcheck.mjs",
    ]) {
      assert.ok(files.includes(f), `${f} is not in the tarball`);
    }
    assert.deepEqual(
      files.filter((f) => f.startsWith("dist/test/") || f.startsWith("dist/bench/") || f.includes("/build/")),
      [],
    );
  });

  it("installs from the tarball and serves a SOCKS session, saying whether GSSAPI is available", async (t) => {
    if (process.env.CI === "true") assert.ok(krb5Headers, "libkrb5-dev is missing: run .ci/install-tools");
    assert.equal(installed.code, 0, describeRun(installed));
    const bin = join(app(), "node_modules", ".bin", "ferry");
    const echo = await startEchoServer();
    const ferry = await spawnFerry({ bin });
    t.after(async () => {
      await ferry.stop();
      await echo.close();
    });
    const line = ferry.logs().find((l) => typeof l.gssapi === "boolean");
    assert.ok(line, `no GSSAPI line at start: ${JSON.stringify(ferry.logs())}`);
    assert.equal(line.gssapi, krb5Headers, line.msg);
    await assertEchoThrough(ferry.port, echo.port);
    const session = await ferry.waitForSession((s) => s.outcome === "ok" || s.reply === 0);
    assert.equal(session.target, `127.0.0.1:${echo.port}`);

    const doctor = await run(bin, ["doctor"], { timeoutMs: 30_000 });
    assert.equal(doctor.code, 0, describeRun(doctor));
    assert.match(doctor.stdout.toString(), krb5Headers ? /GSSAPI: available/ : /GSSAPI: not available/);
    // The subpath exports resolve from the installed package.
    const imported = await run(
      process.execPath,
      ["--input-type=module", "-e", "const m = await import('ferry/client'); console.log(typeof m.connect)"],
      { cwd: app(), timeoutMs: 30_000 },
    );
    assert.equal(imported.stdout.toString().trim(), "function", describeRun(imported));
  });

  it("installs without a working compiler, GSSAPI off with a one-line hint", async () => {
    assert.equal(noCompiler.code, 0, describeRun(noCompiler));
    const output = noCompiler.stdout.toString() + noCompiler.stderr;
    const hints = output.split("\n").filter((l) => l.includes("GSSAPI add-on not built"));
    assert.equal(hints.length, 1, output);
    assert.match(hints[0] ?? "", /npm rebuild ferry/);
    const doctor = await run(join(bare(), "node_modules", ".bin", "ferry"), ["doctor"], {
      timeoutMs: 30_000,
    });
    assert.equal(doctor.code, 0, describeRun(doctor));
    assert.match(doctor.stdout.toString(), /GSSAPI: not available: .*npm rebuild ferry/);
  });
});
