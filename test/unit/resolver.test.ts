import assert from "node:assert/strict";
import { test } from "node:test";
import type { Resolved } from "../../src/dial/family.js";
import { ResolveError, Resolver } from "../../src/dial/resolver.js";

/** A lookup the test answers by hand: every call waits until the test settles it. */
function controlled() {
  const calls: {
    host: string;
    done: boolean;
    resolve: (list: Resolved[]) => void;
    reject: (err: unknown) => void;
  }[] = [];
  const lookup = (host: string) =>
    new Promise<Resolved[]>((resolve, reject) => {
      const c = {
        host,
        done: false,
        resolve: (list: Resolved[]) => {
          c.done = true;
          resolve(list);
        },
        reject: (err: unknown) => {
          c.done = true;
          reject(err);
        },
      };
      calls.push(c);
    });
  const hosts = () => calls.map((c) => c.host);
  const call = (host: string) => {
    const c = calls.find((x) => x.host === host);
    assert.ok(c, `${host} was looked up (calls: ${hosts().join(", ")})`);
    return c;
  };
  /** Answers every lookup still open, and those they let start, so no caller's timer outlives the test. */
  const drain = async () => {
    for (let round = 0; round < 100; round++) {
      const open = calls.filter((c) => !c.done);
      if (open.length === 0) return;
      for (const c of open) c.resolve(addr(0));
      await settle();
    }
    assert.fail("lookups kept starting");
  };
  return { calls, lookup, hosts, call, drain };
}

const addr = (n: number): Resolved[] => [{ address: `192.0.2.${n}`, family: 4 }];
/** Lets the lookup's settlement run through the resolver's promise handlers. */
const settle = () => new Promise<void>((r) => setImmediate(r));
const code = (expected: string) => (err: unknown) => {
  assert.ok(err instanceof ResolveError, `a ResolveError, got ${err}`);
  assert.equal(err.code, expected, err.message);
  return true;
};
/** `p`, or a failure if it is still pending after `ms`: a broken resolver fails its test rather than hanging it. */
function within<T>(p: Promise<T>, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
/** Rejected fast: the caller is not held until the hung lookup returns (which it never does here). */
async function rejectsWithin(p: Promise<unknown>, expected: string, ms = 3000): Promise<void> {
  const started = Date.now();
  await assert.rejects(within(p, ms), code(expected));
  assert.ok(Date.now() - started < ms, `rejected after ${Date.now() - started} ms`);
}

test("timeout: a lookup that never answers fails with ETIMEDOUT; its slot stays taken until it returns", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup, maxInFlight: 1 });
  await rejectsWithin(r.resolve("hung.example", { timeoutMs: 50 }), "ETIMEDOUT");
  assert.deepEqual(
    r.stats,
    { running: 1, queued: 0, cached: 0 },
    "the hung getaddrinfo still holds its thread",
  );

  const next = r.resolve("next.example", { timeoutMs: 20_000 });
  await settle();
  assert.deepEqual(dns.hosts(), ["hung.example"], "the next lookup waits for the slot");
  dns.call("hung.example").resolve(addr(1));
  await settle();
  assert.deepEqual(
    dns.hosts(),
    ["hung.example", "next.example"],
    "the slot is freed when the lookup returns",
  );
  dns.call("next.example").resolve(addr(2));
  assert.deepEqual(await within(next), addr(2));
  assert.deepEqual(
    await within(r.resolve("hung.example")),
    addr(1),
    "the late answer is still cached for the next caller",
  );
  assert.equal(dns.calls.length, 2);
});

test("abort: the caller is released at once, the slot only when the lookup returns", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup, maxInFlight: 1 });
  const ac = new AbortController();
  const p = r.resolve("hung.example", { signal: ac.signal });
  await settle();
  ac.abort();
  await rejectsWithin(p, "ABORT_ERR");
  assert.equal(r.stats.running, 1);

  const after = r.resolve("after.example");
  await settle();
  assert.deepEqual(dns.hosts(), ["hung.example"]);
  dns.call("hung.example").reject(Object.assign(new Error("getaddrinfo ENOTFOUND"), { code: "ENOTFOUND" }));
  await settle();
  dns.call("after.example").resolve(addr(3));
  assert.deepEqual(await within(after), addr(3), "later lookups still work");
  await rejectsWithin(r.resolve("x.example", { signal: AbortSignal.abort() }), "ABORT_ERR");
  assert.equal(dns.calls.length, 2, "an already-aborted call looks nothing up");
});

test("a waiting lookup honours its timeout and signal, and is dropped without costing a slot", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup, maxInFlight: 1 });
  const first = r.resolve("first.example");
  const ac = new AbortController();
  const timed = r.resolve("timed.example", { timeoutMs: 50, client: "B" });
  const aborted = r.resolve("aborted.example", { signal: ac.signal, client: "C" });
  assert.equal(r.stats.queued, 2);
  ac.abort();
  await rejectsWithin(aborted, "ABORT_ERR");
  await rejectsWithin(timed, "ETIMEDOUT");
  assert.deepEqual(r.stats, { running: 1, queued: 0, cached: 0 });
  dns.call("first.example").resolve(addr(1));
  assert.deepEqual(await within(first), addr(1));
  await settle();
  assert.deepEqual(dns.hosts(), ["first.example"], "given-up queued lookups never run");
  // Their clients are no longer charged for them.
  const again = r.resolve("timed.example", { client: "B" });
  await settle();
  dns.call("timed.example").resolve(addr(2));
  assert.deepEqual(await within(again), addr(2));
});

test("per client: the 9th concurrent lookup of one client is refused at once; another client's goes through", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup });
  const a = Array.from({ length: 8 }, (_, i) => r.resolve(`a${i}.example`, { client: "A" }));
  for (const p of a) p.catch(() => {});
  await rejectsWithin(r.resolve("a8.example", { client: "A" }), "ETOOMANY", 1000);
  await assert.rejects(
    within(r.resolve("a9.example", { client: "A" })),
    /too many name lookups in progress for client A/,
  );
  // A name A already waits for costs nothing more.
  const same = r.resolve("a0.example", { client: "A" });

  const b = r.resolve("b.example", { client: "B" });
  await settle();
  assert.ok(dns.hosts().includes("b.example"), "B's lookup runs although A has 8 in progress");
  dns.call("b.example").resolve(addr(9));
  assert.deepEqual(await within(b), addr(9));

  dns.call("a0.example").resolve(addr(1));
  assert.deepEqual(await within(a[0]!), addr(1));
  assert.deepEqual(await within(same), addr(1));
  const more = r.resolve("a8.example", { client: "A" });
  more.catch(() => {});
  assert.equal(r.stats.queued + r.stats.running, 8, "one finished, so A may start one more");
  await dns.drain();
});

test("per client: a lookup the client gave up on still counts until getaddrinfo returns", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup, maxPerClient: 1 });
  await rejectsWithin(r.resolve("slow.example", { client: "A", timeoutMs: 30 }), "ETIMEDOUT");
  await rejectsWithin(r.resolve("other.example", { client: "A" }), "ETOOMANY", 1000);
  dns.call("slow.example").resolve(addr(1));
  await settle();
  const p = r.resolve("other.example", { client: "A" });
  await settle();
  dns.call("other.example").resolve(addr(2));
  assert.deepEqual(await within(p), addr(2));
});

test("total bound: with 3 hung lookups in flight a 4th waits, and succeeds once one returns", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup });
  const hung = ["h1", "h2", "h3"].map((h) => r.resolve(`${h}.example`, { client: h }));
  const fourth = r.resolve("fourth.example", { client: "D" });
  await settle();
  assert.deepEqual(dns.hosts(), ["h1.example", "h2.example", "h3.example"]);
  assert.deepEqual(r.stats, { running: 3, queued: 1, cached: 0 });
  dns.call("h2.example").resolve(addr(2));
  await settle();
  assert.ok(dns.hosts().includes("fourth.example"));
  dns.call("fourth.example").resolve(addr(4));
  assert.deepEqual(await within(fourth), addr(4));
  assert.deepEqual(await within(hung[1]!), addr(2));
  for (const p of hung) p.catch(() => {});
  await dns.drain();
});

test("one client's hung lookups leave a slot for the others", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup });
  const a = ["a1", "a2", "a3"].map((h) => r.resolve(`${h}.example`, { client: "A" }));
  for (const p of a) p.catch(() => {});
  await settle();
  assert.deepEqual(dns.hosts(), ["a1.example", "a2.example"], "A holds at most maxInFlight - 1 slots");
  const b = r.resolve("b.example", { client: "B" });
  await settle();
  dns.call("b.example").resolve(addr(2));
  assert.deepEqual(await within(b), addr(2));
  await dns.drain();
});

test("the wait queue is bounded", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup, maxInFlight: 1, maxQueue: 2 });
  const held = ["q0", "q1", "q2"].map((c) => r.resolve(`${c}.example`, { client: c }));
  for (const p of held) p.catch(() => {});
  assert.deepEqual(r.stats, { running: 1, queued: 2, cached: 0 });
  await rejectsWithin(r.resolve("q3.example", { client: "q3" }), "EBUSY", 1000);
  await dns.drain();
});

test("fairness: client B's one lookup is served within a couple of slots of client A's 50", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup, maxInFlight: 1, maxPerClient: 100 });
  const a = Array.from({ length: 50 }, (_, i) => r.resolve(`a${i}.example`, { client: "A" }));
  const b = r.resolve("b.example", { client: "B" });
  // Answer each lookup in turn, as the single slot frees (bounded: 51 lookups in all).
  for (let i = 0; i < 51 && dns.calls.length > i; i++) {
    dns.calls[i]!.resolve(addr(i % 250));
    await settle();
  }
  assert.equal(dns.calls.length, 51);
  const turn = dns.hosts().indexOf("b.example");
  assert.ok(turn >= 1 && turn <= 2, `B served as lookup #${turn}, not after A's 50`);
  await within(b);
  await within(Promise.all(a));
});

test("coalescing: 10 concurrent lookups of one name call lookup once; a failure is shared, not cached", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup });
  const ten = Array.from({ length: 10 }, (_, i) =>
    r.resolve(i % 2 ? "Example.COM" : "example.com", { client: `c${i}` }),
  );
  await settle();
  assert.equal(dns.calls.length, 1);
  dns.calls[0]!.resolve(addr(7));
  for (const list of await within(Promise.all(ten))) assert.deepEqual(list, addr(7));

  const failing = Array.from({ length: 5 }, () => r.resolve("nx.example"));
  await settle();
  assert.equal(dns.calls.length, 2);
  dns.calls[1]!.reject(Object.assign(new Error("getaddrinfo ENOTFOUND nx.example"), { code: "ENOTFOUND" }));
  for (const p of failing) await assert.rejects(within(p), code("ENOTFOUND"));
  const retry = r.resolve("nx.example");
  await settle();
  assert.equal(dns.calls.length, 3, "no negative cache: the next caller asks again");
  dns.calls[2]!.resolve(addr(8));
  assert.deepEqual(await within(retry), addr(8));
});

test("cache: a hit skips the lookup, entries expire, and the cache is bounded", async () => {
  const dns = controlled();
  let now = 1000;
  const r = new Resolver({ lookup: dns.lookup, cacheMs: 30_000, maxCache: 2, now: () => now });
  const answer = async (host: string, n: number) => {
    const p = r.resolve(host);
    await settle();
    dns.calls.at(-1)!.resolve(addr(n));
    return within(p);
  };
  assert.deepEqual(await answer("one.example", 1), addr(1));
  assert.deepEqual(await within(r.resolve("ONE.example")), addr(1));
  assert.equal(dns.calls.length, 1, "a hit is served from the cache");

  await answer("two.example", 2);
  await answer("three.example", 3);
  assert.equal(r.stats.cached, 2, "bounded to maxCache entries");
  assert.deepEqual(await within(r.resolve("three.example")), addr(3));
  assert.equal(dns.calls.length, 3);
  assert.deepEqual(await answer("one.example", 11), addr(11), "the oldest entry was evicted");
  assert.equal(dns.calls.length, 4);

  now += 29_999;
  assert.deepEqual(await within(r.resolve("three.example")), addr(3), "still fresh just before cacheMs");
  assert.equal(dns.calls.length, 4);
  now += 1;
  assert.deepEqual(await answer("three.example", 33), addr(33), "an expired entry is looked up again");
  assert.equal(dns.calls.length, 5);
});

test("literals need no lookup; an empty answer is ENOTFOUND", async () => {
  const dns = controlled();
  const r = new Resolver({ lookup: dns.lookup });
  assert.deepEqual(await within(r.resolve("127.0.0.1")), [{ address: "127.0.0.1", family: 4 }]);
  assert.deepEqual(await within(r.resolve("::1")), [{ address: "::1", family: 6 }]);
  assert.equal(dns.calls.length, 0);
  const p = r.resolve("empty.example");
  await settle();
  dns.calls[0]!.resolve([]);
  await assert.rejects(within(p), code("ENOTFOUND"));
});

test("the system lookup resolves localhost to loopback", async () => {
  const r = new Resolver();
  const list = await within(r.resolve("localhost", { timeoutMs: 10_000 }), 15_000);
  assert.ok(list.length > 0);
  for (const a of list) {
    assert.ok(a.address === "::1" || a.address.startsWith("127."), `${a.address} is loopback`);
    assert.equal(a.family, a.address.includes(":") ? 6 : 4);
  }
});
