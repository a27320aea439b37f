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
  // Each path against dear in the same round, so a load that comes and goes weighs on both.
  const rounds = await timeRounds(paths, 11);
  const apart = (k: keyof typeof paths) => median(rounds.map((r) => r[k] - r.dear));
  const band = -apart("reference") / 2;
  const figures = (["unknown", "cheap", "inline", "reference"] as const)
    .map((k) => `${k} ${apart(k).toFixed(2)}`)
    .join(", ");
  t.diagnostic(`ms apart from dear (${median(rounds.map((r) => r.dear)).toFixed(2)} ms): ${figures}`);
  for (const path of ["unknown", "cheap", "inline"] as const)
    assert.ok(
      Math.abs(apart(path)) < band,
      `${path} is apart from dear by over ${band.toFixed(2)} ms: ${figures}`,
    );
});

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** `runs` rounds, each timing every path once, in turn. */
async function timeRounds<K extends string>(
  paths: Record<K, () => Promise<unknown>>,
  runs: number,
): Promise<Record<K, number>[]> {
  const rounds: Record<K, number>[] = [];
  for (let i = 0; i < runs; i++) {
    const round = {} as Record<K, number>;
    for (const k of Object.keys(paths) as K[]) {
      const t = process.hrtime.bigint();
      await paths[k]();
      round[k] = Number(process.hrtime.bigint() - t) / 1e6;
    }
    rounds.push(round);
  }
  return rounds;
}
