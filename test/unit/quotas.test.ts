import assert from "node:assert/strict";
import { once } from "node:events";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { ToPrimary, ToWorker } from "../../src/cluster/messages.js";
import { answerQuota } from "../../src/cluster/quota-host.js";
import { WorkerQuotaStore } from "../../src/cluster/worker-quota-store.js";
import { loadConfig, validateConfig } from "../../src/config/load.js";
import { quotaStateFile } from "../../src/config/quota-schema.js";
import type { Config } from "../../src/config/schema.js";
import { parseQuota } from "../../src/config/units.js";
import { QuotaStateFile } from "../../src/server/quota-file.js";
import { periodEnd, periodKey } from "../../src/server/quota-period.js";
import { LocalQuotaStore } from "../../src/server/quota-store.js";
import { type QuotaAdmission, type QuotaLease, type QuotaStatus, Quotas } from "../../src/server/quotas.js";
import { tempDir } from "../helpers/process.js";

const MiB = 1024 * 1024;
const KiB = 1024;

/** A configuration with `quota` as limits.quota (only that part matters to Quotas). */
const withQuota = (quota: Record<string, unknown>): Config =>
  ({ ...validateConfig({ limits: { quota } }, "test"), inlineUsers: [] }) as Config;

/** A clock the test moves. */
function clock(iso: string): { now: () => number; set(iso: string): void } {
  let t = Date.parse(iso);
  return {
    now: () => t,
    set: (next) => {
      t = Date.parse(next);
    },
  };
}

const isLease = (a: QuotaAdmission): a is QuotaLease => a !== undefined && "meter" in a;

/** Counts `total` bytes in chunks of `chunk`; the bytes counted when the meter said stop, or undefined. */
function pour(lease: QuotaLease, total: number, chunk = 16 * KiB): { counted: number; reason?: string } {
  let counted = 0;
  while (counted < total) {
    const n = Math.min(chunk, total - counted);
    counted += n;
    const reason = lease.meter.count(n);
    if (reason) return { counted, reason };
  }
  return { counted };
}

describe("quota sizes and periods", () => {
  test("sizes take the rate units, periods are day or month", () => {
    assert.deepEqual(parseQuota("10GiB/day"), { bytes: 10 * 1024 ** 3, period: "day" });
    assert.deepEqual(parseQuota("500 GiB / month"), { bytes: 500 * 1024 ** 3, period: "month" });
    assert.deepEqual(parseQuota("1.5MB/Day"), { bytes: 1_500_000, period: "day" });
    assert.deepEqual(parseQuota("2TiB/month"), { bytes: 2 * 1024 ** 4, period: "month" });
    for (const bad of ["10GiB", "10GiB/week", "1Mbit/day", "0B/day", "lots/day"]) {
      assert.throws(() => parseQuota(bad), /is not a quota/, bad);
    }
  });

  test("periods are UTC calendar days and months, ending at the next one's start", () => {
    const t = Date.parse("2026-12-31T23:59:59.999Z");
    assert.equal(periodKey("day", t), "day:2026-12-31");
    assert.equal(periodKey("month", t), "month:2026-12");
    assert.equal(new Date(periodEnd("day", t)).toISOString(), "2027-01-01T00:00:00.000Z");
    assert.equal(new Date(periodEnd("month", t)).toISOString(), "2027-01-01T00:00:00.000Z");
    const leap = Date.parse("2028-02-10T12:00:00Z");
    assert.equal(new Date(periodEnd("month", leap)).toISOString(), "2028-03-01T00:00:00.000Z");
    assert.equal(periodKey("day", periodEnd("day", leap)), "day:2028-02-11");
  });

  test("the configuration: per-user overrides and none", () => {
    const c = withQuota({ perUser: "1MiB/day", users: { bob: "2GiB/month", carol: "none" } });
    const quotas = new Quotas(new LocalQuotaStore());
    quotas.adopt(c);
    assert.ok(isLease(quotas.admit("alice") as QuotaAdmission));
    assert.ok(isLease(quotas.admit("bob") as QuotaAdmission));
    assert.equal(quotas.admit("carol"), undefined, "carol has no quota");
    assert.throws(() => withQuota({ perUser: "1MiB/week" }), /is not a quota/);
  });
});

describe("one process: counting, refusal, cut, rollover, reload", () => {
  test("counts both ways up to the limit, cuts on the chunk that goes over, refuses the next session", async () => {
    const c = clock("2026-12-02T10:00:00Z");
    const store = new LocalQuotaStore();
    const quotas = new Quotas(store, { now: c.now });
    quotas.adopt(withQuota({ perUser: "1MiB/day" }));
    const first = quotas.admit("alice");
    assert.ok(isLease(first as QuotaAdmission));
    const a = first as QuotaLease;
    assert.deepEqual(pour(a, 600 * KiB), { counted: 600 * KiB }, "under the quota: not cut");
    // A second session of the same user shares the count.
    const b = quotas.admit("alice") as QuotaLease;
    const exhausted = once(quotas, "exhausted") as Promise<[QuotaStatus]>;
    const cut = pour(b, 1 * MiB);
    assert.ok(cut.reason, "cut");
    assert.match(
      cut.reason!,
      /user alice has used up the transfer quota \(1MiB\/day\); it resets at 2026-12-03T00:00:00.000Z/,
    );
    assert.ok(
      600 * KiB + cut.counted > MiB && 600 * KiB + cut.counted <= MiB + 16 * KiB,
      "cut on the chunk that goes over",
    );
    const [s] = await exhausted;
    assert.equal(s.user, "alice");
    assert.equal(s.resetsAt, "2026-12-03T00:00:00.000Z");
    // A single process's store hears every chunk at once.
    assert.equal(store.add("alice", "day:2026-12-02", 0), 600 * KiB + cut.counted);
    a.release();
    b.release();
    const refused = quotas.admit("alice") as QuotaAdmission;
    assert.ok(refused && "refused" in refused, "refused once over");
    assert.match(
      refused.refused,
      /user alice is over the transfer quota: 1\.\d+MiB of 1MiB used this day \(UTC\); it resets at 2026-12-03T00:00:00.000Z/,
    );
    assert.ok(isLease(quotas.admit("bob") as QuotaAdmission), "another user is not affected");
  });

  test("at midnight UTC the count starts again: the user is admitted, the old day's count stays under its key", () => {
    const c = clock("2026-12-02T23:59:30Z");
    const store = new LocalQuotaStore();
    const quotas = new Quotas(store, { now: c.now });
    quotas.adopt(withQuota({ perUser: "1MiB/day" }));
    const a = quotas.admit("alice") as QuotaLease;
    assert.ok(pour(a, 2 * MiB).reason, "cut");
    a.release();
    assert.ok("refused" in (quotas.admit("alice") as object), "refused before midnight");
    c.set("2026-12-03T00:00:00.000Z");
    quotas.tick();
    const next = quotas.admit("alice") as QuotaAdmission;
    assert.ok(isLease(next), "admitted after midnight");
    assert.deepEqual(pour(next, 512 * KiB), { counted: 512 * KiB });
    assert.equal(store.add("alice", "day:2026-12-03", 0), 512 * KiB);
    assert.ok(store.add("alice", "day:2026-12-02", 0) > MiB);
    // A session running across midnight counts into the new day from the tick on.
    c.set("2026-12-04T00:00:00.500Z");
    quotas.tick();
    assert.deepEqual(pour(next, 900 * KiB), { counted: 900 * KiB }, "yesterday's 512 KiB no longer count");
    assert.equal(store.add("alice", "day:2026-12-04", 0), 900 * KiB);
  });

  test("a month quota resets on the first of the month", () => {
    const c = clock("2027-01-31T23:00:00Z");
    const quotas = new Quotas(new LocalQuotaStore(), { now: c.now });
    quotas.adopt(withQuota({ perUser: "1MiB/month" }));
    const a = quotas.admit("alice") as QuotaLease;
    assert.ok(pour(a, 2 * MiB).reason);
    a.release();
    const refused = quotas.admit("alice") as { refused: string };
    assert.match(refused.refused, /this month \(UTC\); it resets at 2027-02-01T00:00:00.000Z/);
    c.set("2027-02-01T00:00:00Z");
    assert.ok(isLease(quotas.admit("alice") as QuotaAdmission), "admitted on the first");
  });

  test("a reload's new limit applies to the running count", async () => {
    const c = clock("2026-12-02T10:00:00Z");
    const quotas = new Quotas(new LocalQuotaStore(), { now: c.now });
    quotas.adopt(withQuota({ perUser: "4MiB/day" }));
    const a = quotas.admit("alice") as QuotaLease;
    assert.deepEqual(pour(a, 2 * MiB), { counted: 2 * MiB });
    // Lowered below what was used: the running sessions are cut (the server does so on
    // `exhausted`), at the latest at their next chunk; a new one is refused.
    const exhausted = once(quotas, "exhausted");
    quotas.adopt(withQuota({ perUser: "1MiB/day" }));
    await exhausted;
    assert.ok(a.meter.count(1), "cut at the next byte");
    assert.ok("refused" in (quotas.admit("alice") as object));
    // Raised again: the same count, now under the limit.
    quotas.adopt(withQuota({ perUser: "3MiB/day" }));
    const b = quotas.admit("alice") as QuotaAdmission;
    assert.ok(isLease(b));
    const r = pour(b, 2 * MiB);
    assert.ok(
      r.reason && r.counted > MiB - 1 && r.counted <= MiB + 16 * KiB,
      `cut near 3 MiB in all: ${r.counted}`,
    );
    // A user the new configuration exempts is not counted against anything.
    quotas.adopt(withQuota({ perUser: "1MiB/day", users: { alice: "none" } }));
    assert.equal(quotas.admit("alice"), undefined);
    assert.equal(a.meter.count(10 * MiB), undefined, "no quota, no cut");
  });

  test("report: usage, limit, remaining and reset time per user", async () => {
    const c = clock("2026-12-02T10:00:00Z");
    const quotas = new Quotas(new LocalQuotaStore(), { now: c.now });
    quotas.adopt(withQuota({ perUser: "1MiB/day", users: { bob: "10MiB/month", carol: "none" } }));
    pour(quotas.admit("alice") as QuotaLease, 2 * MiB);
    const report = await quotas.report();
    assert.deepEqual(
      report.map((r) => [r.user, r.period, r.key, r.limit, r.exhausted, r.resetsAt]),
      [
        ["alice", "day", "day:2026-12-02", MiB, true, "2026-12-03T00:00:00.000Z"],
        ["bob", "month", "month:2026-12", 10 * MiB, false, "2027-01-01T00:00:00.000Z"],
      ],
    );
    assert.equal(report[0]!.remaining, 0);
    assert.ok(report[0]!.used > MiB);
    assert.equal(report[1]!.used, 0);
  });
});

/** A primary's store and `n` workers' stores, messages delivered a turn later as over IPC. */
function cluster(n: number): { host: LocalQuotaStore; stores: WorkerQuotaStore[]; messages: () => number } {
  const host = new LocalQuotaStore();
  let messages = 0;
  const stores = Array.from({ length: n }, () => {
    let handler: ((m: ToWorker | undefined) => void) | undefined;
    return new WorkerQuotaStore({
      send: (m: ToPrimary) =>
        setImmediate(() => {
          messages++;
          const answer = answerQuota(host, m);
          if (answer) setImmediate(() => handler?.(answer));
        }),
      listen: (h) => {
        handler = h;
      },
    });
  });
  return { host, stores, messages: () => messages };
}

describe("workers: counts shared through the primary", () => {
  test("batches: few messages, the total bounded, and a worker learns that the others used the quota up", async () => {
    const c = clock("2026-12-02T10:00:00Z");
    const { host, stores, messages } = cluster(2);
    const [w1, w2] = stores.map((s) => new Quotas(s, { now: c.now, shared: true, shares: 2 }));
    const config = withQuota({ perUser: "8MiB/day" });
    w1!.adopt(config);
    w2!.adopt(config);
    const a = (await w1!.admit("alice")) as QuotaLease;
    const b = (await w2!.admit("alice")) as QuotaLease;
    assert.ok(isLease(a) && isLease(b));
    const exhausted = once(w2!, "exhausted");
    // Worker 1 moves 9 MiB in 16 KiB chunks, the IPC answered between chunks of 256 KiB.
    let cut: string | undefined;
    let counted = 0;
    while (!cut && counted < 9 * MiB) {
      for (let i = 0; i < 16 && !cut; i++) {
        counted += 16 * KiB;
        cut = a.meter.count(16 * KiB);
      }
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(cut, "worker 1's session cut");
    assert.ok(counted > 8 * MiB - 1 && counted <= 8 * MiB + 256 * KiB, `cut near the quota: ${counted}`);
    assert.ok(
      messages() < 60,
      `batched, not a message a chunk: ${messages()} messages for ${counted / (16 * KiB)} chunks`,
    );
    // Worker 2 hears it at its next tick and cuts alice's sessions there.
    w2!.tick();
    await exhausted;
    assert.ok(b.meter.count(1), "worker 2's session is cut at its next byte");
    const refused = await w2!.admit("alice");
    assert.ok(refused && "refused" in refused, "and a new session there is refused");
    await w1!.flush();
    assert.ok(host.add("alice", "day:2026-12-02", 0) >= counted, "the primary has every byte");
  });

  test("two workers pouring at once overshoot by a bounded amount", async () => {
    const c = clock("2026-12-02T10:00:00Z");
    const { host, stores } = cluster(2);
    const workers = stores.map((s) => new Quotas(s, { now: c.now, shared: true, shares: 2 }));
    for (const w of workers) w.adopt(withQuota({ perUser: "4MiB/day" }));
    const leases = (await Promise.all(workers.map((w) => w.admit("alice")))) as QuotaLease[];
    const counted = [0, 0];
    const cut = [false, false];
    for (let round = 0; round < 2000 && !(cut[0] && cut[1]); round++) {
      for (let i = 0; i < 2; i++) {
        if (cut[i]) continue;
        counted[i]! += 16 * KiB;
        if (leases[i]!.meter.count(16 * KiB)) cut[i] = true;
      }
      if (round % 8 === 0) {
        for (const w of workers) w.tick();
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    assert.ok(cut[0] && cut[1], "both cut");
    const total = counted[0]! + counted[1]!;
    // Each holds back at most a share of what is left (64 KiB at the end), plus a chunk.
    assert.ok(total > 4 * MiB && total <= 4 * MiB + 256 * KiB, `total ${total}`);
    for (const w of workers) await w.flush();
    assert.equal(host.add("alice", "day:2026-12-02", 0), total);
  });
});

describe("the state file", () => {
  test("written atomically, read back at start, ended periods dropped, a broken file refused", async () => {
    const dir = await tempDir("ferry-quota-");
    try {
      const file = join(dir.path, "state", "quota.json");
      const c = clock("2026-12-02T10:00:00Z");
      const store = new LocalQuotaStore();
      const errors: string[] = [];
      const f = await QuotaStateFile.open(file, store, (m) => errors.push(m), c.now);
      store.add("alice", "day:2026-12-02", 1234);
      store.add("bob", "month:2026-12", 99);
      store.add("old", "day:2026-11-30", 5);
      await f.close();
      assert.deepEqual(await readdir(join(dir.path, "state")), ["quota.json"], "no temporary file left");
      const body = JSON.parse(await readFile(file, "utf8"));
      assert.equal(body.ferry, "quota");
      assert.deepEqual(body.periods, { "day:2026-12-02": { alice: 1234 }, "month:2026-12": { bob: 99 } });
      // Read at start, a day later: the day's count is gone, the month's stays.
      c.set("2026-12-03T00:00:01Z");
      const again = new LocalQuotaStore();
      const g = await QuotaStateFile.open(file, again, (m) => errors.push(m), c.now);
      assert.equal(again.add("alice", "day:2026-12-02", 0), 0);
      assert.equal(again.add("bob", "month:2026-12", 0), 99);
      await g.close();
      assert.deepEqual(errors, []);
      await writeFile(file, "{not json");
      await assert.rejects(
        QuotaStateFile.open(file, new LocalQuotaStore(), () => {}),
        /is not a Ferry quota state file/,
      );
    } finally {
      await dir.remove();
    }
  });
});

test("the example in docs/quotas.md loads as documented", async () => {
  const doc = await readFile("docs/quotas.md", "utf8");
  const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(yaml, "docs/quotas.md has a yaml example");
  const dir = await tempDir("ferry-quota-doc-");
  try {
    const file = join(dir.path, "ferry.yaml");
    await writeFile(file, yaml);
    const config = await loadConfig({ file });
    const quota = config.limits.quota!;
    assert.deepEqual(quota.perUser, { bytes: MiB, period: "day" });
    assert.deepEqual(quota.users, { backup: { bytes: 500 * 1024 ** 3, period: "month" }, admin: "none" });
    assert.equal(quota.stateFile, join(dir.path, "quota.json"), "relative to the configuration file");
  } finally {
    await dir.remove();
  }
});

test("without stateFile: $STATE_DIRECTORY, else next to the configuration file", async () => {
  const saved = process.env.STATE_DIRECTORY;
  try {
    delete process.env.STATE_DIRECTORY;
    const quota = { perUser: parseQuota("1MiB/day"), users: {} };
    assert.equal(quotaStateFile(quota, "/etc/ferry/ferry.yaml"), "/etc/ferry/ferry-quota.json");
    process.env.STATE_DIRECTORY = "/var/lib/ferry";
    assert.equal(quotaStateFile(quota, "/etc/ferry/ferry.yaml"), "/var/lib/ferry/ferry-quota.json");
  } finally {
    if (saved === undefined) delete process.env.STATE_DIRECTORY;
    else process.env.STATE_DIRECTORY = saved;
  }
});
