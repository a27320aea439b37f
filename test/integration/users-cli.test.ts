import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import bcrypt from "bcryptjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const ferryBin = path.join(root, "bin/ferry");

const ferry = (args: string[], input = "") =>
  spawnSync(process.execPath, [ferryBin, ...args], { encoding: "utf8", input, timeout: 60_000 });

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ferry-users-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("ferry users: stdin, --password-stdin, --insecure-password (warned), atomic 0600 file, remove, list", async () => {
  const file = path.join(dir, "users.htpasswd");
  const a = ferry(["users", "add", "--cost", "4", file, "alice"], "first-pw\n");
  assert.equal(a.status, 0, a.stderr);
  const b = ferry(["users", "add", "--cost", "4", "--password-stdin", file, "bob"], "bob-pw\nignored\n");
  assert.equal(b.status, 0, b.stderr);
  const c = ferry(["users", "add", "--cost", "4", "--insecure-password", "carol-pw", file, "carol"]);
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stderr, /warning: a password on the command line can be seen by other local users/);
  const both = ferry(["users", "add", "--password-stdin", "--insecure-password", "x", file, "dave"], "x\n");
  assert.notEqual(both.status, 0);

  const text = await readFile(file, "utf8");
  assert.doesNotMatch(text, /first-pw|bob-pw|carol-pw/, "no plain password on disk");
  const hashes = Object.fromEntries(
    text
      .trim()
      .split("\n")
      .map((l) => l.split(":") as [string, string]),
  );
  assert.ok(await bcrypt.compare("first-pw", hashes.alice!));
  assert.ok(await bcrypt.compare("bob-pw", hashes.bob!), "only the first line of stdin is the password");
  assert.ok(await bcrypt.compare("carol-pw", hashes.carol!));
  assert.equal((await stat(file)).mode & 0o777, 0o600);

  assert.equal(ferry(["users", "remove", file, "bob"]).status, 0);
  assert.equal(ferry(["users", "remove", file, "bob"]).status, 1, "removing a missing user fails");
  assert.equal(ferry(["users", "list", file]).stdout, "alice\ncarol\n");
  assert.deepEqual(await readdir(dir), ["users.htpasswd"], "no temporary file is left behind");
});
