import assert from "node:assert/strict";
import { test } from "node:test";
import { clientGroup, LoginGuard } from "../../src/auth/login-guard.js";

test("IPv4 addresses count alone, IPv6 addresses by their /64", () => {
  assert.equal(clientGroup("192.0.2.7"), "192.0.2.7");
  assert.equal(clientGroup("::ffff:192.0.2.7"), "192.0.2.7");
  assert.equal(clientGroup("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  assert.equal(clientGroup("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64");
  assert.equal(clientGroup("2001:db8:1:3::1"), "2001:db8:1:3::/64");
  assert.equal(clientGroup("::1"), "::/64");
});

/** A check that finishes when told to, and says whether it was started. */
function gate(ok: boolean) {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  const g = {
    started: false,
    open,
    check: async () => {
      g.started = true;
      await opened;
      return ok;
    },
  };
  return g;
}

test("one /64 shares the bound on attempts in line", async () => {
  const guard = new LoginGuard({ maxPendingPerClient: 2, baseDelayMs: 0 });
  const a = gate(false);
  const b = gate(false);
  const first = guard.attempt("2001:db8::1", "alice", "userpass", a.check);
  const second = guard.attempt("2001:db8::2", "alice", "userpass", b.check);
  assert.equal(guard.pending("2001:db8::99"), 2);
  const third = await guard.attempt("2001:db8::3", "bob", "userpass", async () => true);
  assert.deepEqual(third, {
    ok: false,
    refused: "too many login attempts in line from 2001:db8::/64 (2); not checked",
  });
  // Another /64 is not held back.
  assert.deepEqual(await guard.attempt("2001:db8:0:1::1", "alice", "userpass", async () => true), {
    ok: true,
  });
  a.open();
  b.open();
  assert.deepEqual(await first, { ok: false });
  assert.deepEqual(await second, { ok: false });
  assert.equal(guard.pending(), 0);
});

test("the next attempt for a user is not checked until the last one's delay is over; one that leaves the line is skipped", async () => {
  const guard = new LoginGuard({ baseDelayMs: 100 });
  const a = gate(false);
  const b = gate(true);
  const c = gate(true);
  const left = new AbortController();
  const first = guard.attempt("192.0.2.7", "alice", "userpass", a.check);
  const second = guard.attempt("192.0.2.7", "alice", "userpass", b.check, left.signal);
  const third = guard.attempt("192.0.2.7", "alice", "userpass", c.check);
  await new Promise((r) => setImmediate(r));
  assert.ok(a.started && !b.started && !c.started);
  left.abort(new Error("gone"));
  await assert.rejects(second, /gone/);
  const failedAt = Date.now();
  a.open();
  c.open();
  assert.deepEqual(await first, { ok: false });
  assert.ok(!c.started, "not checked while the failure is held");
  assert.deepEqual(await third, { ok: true });
  assert.ok(Date.now() - failedAt >= 99, "the third waited out the 100 ms delay");
  assert.ok(!b.started, "the attempt that left was never checked");
  assert.equal(guard.pending(), 0);
});
