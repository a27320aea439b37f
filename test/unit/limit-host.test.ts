import assert from "node:assert/strict";
import { test } from "node:test";
import { LimitHost } from "../../src/cluster/limit-host.js";
import type { ToPrimary, ToWorker } from "../../src/cluster/messages.js";
import { WorkerLimitStore } from "../../src/cluster/worker-store.js";
import type { Claim, Taken } from "../../src/server/limit-store.js";

/** A primary and `n` workers in one process; messages are delivered later, as over IPC. */
function pool(n: number): { host: LimitHost; stores: WorkerLimitStore[]; kill(i: number): void } {
  const host = new LimitHost();
  const alive: boolean[] = [];
  const handlers: ((m: ToWorker | undefined) => void)[] = [];
  const stores = Array.from({ length: n }, (_, i) => {
    alive[i] = true;
    host.attach(i, (m: ToWorker) => setImmediate(() => alive[i] && handlers[i]?.(m)));
    return new WorkerLimitStore({
      send: (m: ToPrimary) => setImmediate(() => alive[i] && host.receive(i, m)),
      listen: (h) => {
        handlers[i] = h;
      },
    });
  });
  return {
    host,
    stores,
    kill(i) {
      alive[i] = false;
      host.detach(i);
    },
  };
}

const ok = (t: Taken): t is { release(): void } => !("refused" in t);

test("a cap holds across workers taking at once, and every slot is used before a refusal", async () => {
  const { stores, host } = pool(3);
  const claim: Claim = { key: "user\0alice", limit: 10 };
  const taken = await Promise.all(Array.from({ length: 30 }, (_, i) => stores[i % 3]!.take([claim])));
  assert.equal(taken.filter(ok).length, 10, "exactly the cap admitted");
  assert.equal(host.held("user\0alice"), 10);
  // Freed on one worker, taken on another (reclaimed through the primary).
  const mine = taken.filter(ok);
  mine[0]!.release();
  mine[0]!.release(); // idempotent
  const again = await Promise.all(stores.map((s) => s.take([claim])));
  assert.equal(again.filter(ok).length, 1);
});

test("all or none: a full second claim gives the first one back", async () => {
  const { stores } = pool(2);
  const a: Claim = { key: "sessions", limit: 100 };
  const b: Claim = { key: "client:127.0.0.1", limit: 1 };
  const first = await stores[0]!.take([a, b]);
  assert.ok(ok(first));
  const second = await stores[1]!.take([a, b]);
  assert.deepEqual(second, { refused: 1 });
  first.release();
  assert.ok(ok(await stores[1]!.take([a, b])));
});

test("a lower limit after a reload holds at once; a dead worker's slots are freed", async () => {
  const { stores, host, kill } = pool(2);
  const held: { release(): void }[] = [];
  for (let i = 0; i < 6; i++) {
    const t = await stores[i % 2]!.take([{ key: "k", limit: 100 }]);
    assert.ok(ok(t));
    held.push(t);
  }
  // 6 running, the cap now 7: one more in all, whichever worker asks.
  const lower: Claim = { key: "k", limit: 7 };
  const after = await Promise.all([
    stores[0]!.take([lower]),
    stores[1]!.take([lower]),
    stores[0]!.take([lower]),
  ]);
  assert.equal(after.filter(ok).length, 1);
  kill(0);
  assert.equal(host.held("k", 0), 0, "the dead worker holds nothing");
  assert.ok(host.held("k") <= 7);
  // Its three sessions are gone with it: worker 1 may now have up to 7 in all.
  let more = 0;
  for (let i = 0; i < 10; i++) if (ok(await stores[1]!.take([lower]))) more++;
  const survivors = 3 + (ok(after[1]!) ? 1 : 0);
  assert.equal(more, 7 - survivors);
});
