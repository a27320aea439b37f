import assert from "node:assert/strict";
import { test } from "node:test";
import bcrypt from "bcryptjs";
import { hashPassword } from "../../src/auth/htpasswd.js";
import { UserDatabase } from "../../src/auth/users.js";

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

test("with mixed costs, an unknown name and a cheaper user's wrong password take as long as the dearest user's", async (t) => {
  // Otherwise the time of a refusal tells an attacker which user names exist. bcrypt doubles its
  // work per step of cost: cost 4 here is a sixteenth of cost 8.
  const file = [
    { name: "cheap", hash: bcrypt.hashSync("cheap-pw", 4) },
    { name: "dear", hash: bcrypt.hashSync("dear-pw", 8) },
  ];
  const db = new UserDatabase(file, [{ name: "inline", password: "inline-pw" }]);
  const cheapAlone = new UserDatabase([file[0]!]);
  const paths = {
    dear: () => db.verify("dear", "guess"),
    unknown: () => db.verify("nobody", "guess"),
    cheap: () => db.verify("cheap", "guess"),
    inline: () => db.verify("inline", "guess"),
    // The same cheap check where it is the dearest: what the cheap user cost with no padding.
    reference: () => cheapAlone.verify("cheap", "guess"),
  };
  for (const run of Object.values(paths)) await run(); // warm up
  const times = await medianMsEach(paths, 9);
  const band = (times.dear - times.reference) / 2;
  const figures = JSON.stringify(
    Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v.toFixed(2)])),
  );
  t.diagnostic(figures);
  for (const path of ["unknown", "cheap", "inline"] as const)
    assert.ok(
      Math.abs(times[path] - times.dear) < band,
      `${path} is apart from dear by over ${band.toFixed(2)} ms: ${figures}`,
    );
});

/** Medians of `runs` timings of each path, run in turn so a passing load weighs on all alike. */
async function medianMsEach<K extends string>(
  paths: Record<K, () => Promise<unknown>>,
  runs: number,
): Promise<Record<K, number>> {
  const times = Object.fromEntries(Object.keys(paths).map((k) => [k, [] as number[]])) as Record<K, number[]>;
  for (let i = 0; i < runs; i++) {
    for (const k of Object.keys(paths) as K[]) {
      const t = process.hrtime.bigint();
      await paths[k]();
      times[k].push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v as number[])])) as Record<
    K,
    number
  >;
}
