import assert from "node:assert/strict";
import { test } from "node:test";
import { hashPassword } from "../../src/auth/htpasswd.js";
import { UserDatabase } from "../../src/auth/users.js";

async function medianMs(fn: () => Promise<unknown>, runs = 7): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)]!;
}

test("users from the command line and from a file verify their own passwords only", async () => {
  const db = new UserDatabase(
    [{ name: "file", hash: await hashPassword("from-file", 4) }],
    [{ name: "inline", password: "from-flag" }],
  );
  assert.equal(await db.verify("file", "from-file"), true);
  assert.equal(await db.verify("file", "from-file"), true, "again, from the cache");
  assert.equal(await db.verify("file", "from-flag"), false);
  assert.equal(await db.verify("inline", "from-flag"), true);
  assert.equal(await db.verify("inline", "from-file"), false);
  assert.equal(await db.verify("nobody", "from-flag"), false);
  assert.equal(await db.verify("inline", ""), false);
});

test("with command-line users only, an unknown name takes as long as a wrong password", async () => {
  // Otherwise the time of a refusal tells an attacker which user names exist.
  const db = new UserDatabase([], [{ name: "alice", password: "secret" }]);
  const wrong = await medianMs(() => db.verify("alice", "guess"));
  const unknown = await medianMs(() => db.verify("mallory", "guess"));
  assert.ok(
    Math.abs(unknown - wrong) < 20,
    `unknown user ${unknown.toFixed(2)} ms, wrong password ${wrong.toFixed(2)} ms`,
  );
});
