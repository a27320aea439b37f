import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HandshakeBudget, PRESSURE_FLOOR_MS, pressureTimeout } from "../../src/server/handshake-budget.js";
import { waitFor } from "../helpers/net.js";

describe("pressureTimeout", () => {
  test("the configured timeout up to half the budget, then down to the floor when full", () => {
    assert.equal(pressureTimeout(10_000, 0, 1000), 10_000);
    assert.equal(pressureTimeout(10_000, 500, 1000), 10_000);
    assert.equal(pressureTimeout(10_000, 750, 1000), 5500);
    assert.equal(pressureTimeout(10_000, 1000, 1000), PRESSURE_FLOOR_MS);
    assert.equal(pressureTimeout(10_000, 5000, 1000), PRESSURE_FLOOR_MS);
    // Never longer than configured, and 0 (no timeout) stays 0.
    assert.equal(pressureTimeout(300, 1000, 1000), 300);
    assert.equal(pressureTimeout(0, 1000, 1000), 0);
  });
});

/** Admits a handshake whose shedding is recorded in `shed` (by label). */
function admit(budget: HandshakeBudget, size: number, client: string, label: string, shed: string[]) {
  return budget.admit(client, size, 10_000, () => shed.push(label));
}

describe("HandshakeBudget", () => {
  test("when full, it sheds the oldest handshake of the address holding the most, never refusing", () => {
    const budget = new HandshakeBudget();
    const shed: string[] = [];
    for (let i = 0; i < 8; i++) admit(budget, 10, "192.0.2.1", `a${i}`, shed);
    admit(budget, 10, "192.0.2.2", "b0", shed);
    admit(budget, 10, "192.0.2.3", "honest", shed);
    assert.equal(budget.inProgress, 10);
    admit(budget, 10, "192.0.2.2", "b1", shed);
    admit(budget, 10, "192.0.2.3", "honest2", shed);
    assert.deepEqual(shed, ["a0", "a1"], "the heaviest address pays, oldest first");
    assert.equal(budget.inProgress, 10);
    assert.equal(budget.shed, 2);
  });

  test("an attacker with 100 addresses churning through the budget never sheds an honest handshake", () => {
    const budget = new HandshakeBudget();
    const shed: string[] = [];
    let honest = 0;
    for (let i = 0; i < 5000; i++) {
      admit(budget, 1000, `10.0.0.${(i % 100) + 1}`, "attacker", shed);
      // Every 50th connection is an honest client's, whose handshake finishes before the next.
      if (i % 50 === 0) {
        const t = admit(budget, 1000, "192.0.2.7", "honest", shed);
        honest++;
        t.release();
      }
    }
    assert.equal(budget.inProgress, 1000);
    assert.equal(shed.length, 4000);
    assert.ok(!shed.includes("honest"), "no honest handshake was shed");
    assert.equal(honest, 100);
  });

  test("an IPv6 client counts by its /64, so many addresses of one network are one heavy client", () => {
    const budget = new HandshakeBudget();
    const shed: string[] = [];
    for (let i = 1; i <= 3; i++) admit(budget, 4, `2001:db8:0:1::${i}`, `net${i}`, shed);
    admit(budget, 4, "2001:db8:0:2::1", "other", shed);
    admit(budget, 4, "2001:db8:0:3::1", "new", shed);
    assert.deepEqual(shed, ["net1"]);
  });

  test("a released handshake frees its place and is never shed", () => {
    const budget = new HandshakeBudget();
    const shed: string[] = [];
    const t = admit(budget, 2, "192.0.2.1", "done", shed);
    admit(budget, 2, "192.0.2.1", "waiting", shed);
    t.release();
    t.release();
    assert.equal(budget.inProgress, 1);
    admit(budget, 2, "192.0.2.2", "new", shed);
    assert.deepEqual(shed, []);
  });

  test("above half the budget, handshakes older than the shortened timeout are closed", async () => {
    const budget = new HandshakeBudget();
    const reasons: string[] = [];
    for (let i = 0; i < 4; i++) budget.admit(`192.0.2.${i + 1}`, 4, 10_000, (r) => reasons.push(r));
    // Full: the timeout is the 1 s floor, not the configured 10 s.
    await waitFor(() => reasons.length === 4, 8000, "the stalled handshakes to be closed");
    assert.equal(
      reasons[0],
      "handshake not finished within 1000 ms (shortened from 10000 ms: 4 of 4 handshakes in progress)",
    );
    assert.equal(budget.inProgress, 0);
  });

  test("at half the budget or less, the configured timeout stands", async () => {
    const budget = new HandshakeBudget();
    const reasons: string[] = [];
    for (let i = 0; i < 2; i++) budget.admit(`192.0.2.${i + 1}`, 4, 10_000, (r) => reasons.push(r));
    await new Promise((r) => setTimeout(r, PRESSURE_FLOOR_MS + 500));
    assert.deepEqual(reasons, []);
    assert.equal(budget.inProgress, 2);
  });
});
