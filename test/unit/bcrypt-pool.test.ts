import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import bcrypt from "bcryptjs";
import { BcryptPool } from "../../src/auth/bcrypt-pool.js";

const hash = bcrypt.hashSync("right", 4);

test("checks run on a worker and say whether the password matched", async () => {
  const pool = new BcryptPool({ size: 1 });
  const [good, bad] = await Promise.all([pool.compare("right", hash), pool.compare("wrong", hash)]);
  assert.equal(good.ok, true);
  assert.equal(bad.ok, false);
  assert.ok(bad.ms > 0);
  assert.equal(pool.workers, 1, "one worker, as asked");
  assert.equal(pool.pending, 0);
});

test("a worker that dies fails its own check only, and the next check gets a new worker", async () => {
  const pool = new BcryptPool({
    size: 1,
    workerUrl: new URL("../helpers/dying-bcrypt-worker.js", import.meta.url),
  });
  const [died, next] = await Promise.allSettled([pool.compare("die", hash), pool.compare("right", hash)]);
  assert.equal(died.status, "rejected");
  assert.match(String((died as PromiseRejectedResult).reason), /the password check worker exited \(code 3\)/);
  assert.deepEqual(next.status === "fulfilled" && next.value.ok, true);
  assert.equal(pool.workers, 1);
});

test("checks beyond the bound are refused at once", async () => {
  const pool = new BcryptPool({ size: 1, maxPending: 2 });
  const results = await Promise.allSettled([0, 1, 2].map(() => pool.compare("right", hash)));
  assert.deepEqual(
    results.map((r) => r.status),
    ["fulfilled", "fulfilled", "rejected"],
  );
  assert.match(
    String((results[2] as PromiseRejectedResult).reason),
    /too many password checks pending \(2\)/,
  );
});

test("an idle pool does not keep the process alive", () => {
  const pool = new URL("../../src/auth/bcrypt-pool.js", import.meta.url).href;
  const script = `import { BcryptPool } from ${JSON.stringify(pool)};
const r = await new BcryptPool().compare("wrong", ${JSON.stringify(hash)});
console.log(JSON.stringify(r.ok));`;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 30_000,
  });
  assert.equal(child.signal, null, "the process had to be killed: the worker kept it alive");
  assert.equal(child.status, 0, child.stderr);
  assert.equal(child.stdout.trim(), "false");
});
