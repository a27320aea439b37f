import assert from "node:assert/strict";
import { test } from "node:test";
import { DenialRing } from "../../src/observe/live/denials.js";
import type { SessionRecord } from "../../src/server/context.js";
import type { DecisionEvent } from "../../src/server/state.js";

const deny = (client: string, target: string, rule = "rules[0]"): DecisionEvent => ({
  stage: "address",
  client,
  target,
  command: "connect",
  decision: { verdict: "deny", rule, reason: "no" } as DecisionEvent["decision"],
});

const refusedRecord = (id: number, client: string, target: string, rule = "rules[0]"): SessionRecord => ({
  id,
  client,
  clientPort: 1000 + id,
  target,
  rule,
  reply: 2,
  replyName: "connection not allowed by ruleset",
  reason: `denied by rule ${rule}: no`,
  bytesUp: 0,
  bytesDown: 0,
  startedAt: 0,
  durationMs: 0,
});

test("a decision event and the record of the same refusal make one entry", () => {
  const ring = new DenialRing(10);
  ring.decision(deny("127.0.0.1", "a:1"));
  ring.decision(deny("127.0.0.9", "b:1"));
  ring.session(refusedRecord(1, "127.0.0.1", "a:1"));
  ring.session(refusedRecord(2, "127.0.0.9", "b:1"));
  // A record with no decision before it is an entry of its own.
  ring.session(refusedRecord(3, "127.0.0.1", "c:1"));
  const list = ring.list();
  assert.deepEqual(
    list.map((d) => [d.target, d.session, d.stage]),
    [
      ["c:1", "3", "request"],
      ["b:1", "2", "address"],
      ["a:1", "1", "address"],
    ],
  );
  assert.equal(new Set(list.map((d) => d.id)).size, 3, "ids are unique");
});

test("a refused connection completes the client-stage decision it follows", () => {
  const ring = new DenialRing(10);
  ring.decision({ ...deny("127.0.0.5", ""), stage: "client", target: undefined } as unknown as DecisionEvent);
  ring.refused({ client: "127.0.0.5", clientPort: 5, reason: "client refused by rule rules[0]: no" });
  ring.refused({ client: "127.0.0.6", clientPort: 6, reason: "sessions limit (10) reached" });
  assert.deepEqual(
    ring.list().map((d) => [d.client, d.stage, d.rule]),
    [
      ["127.0.0.6", "limit", undefined],
      ["127.0.0.5", "client", "rules[0]"],
    ],
  );
});

test("only refusals count, and only the newest are kept", () => {
  const ring = new DenialRing(3);
  ring.decision({
    ...deny("127.0.0.1", "x:1"),
    decision: { verdict: "allow", rule: "r", reason: "" },
  } as DecisionEvent);
  ring.session({ ...refusedRecord(1, "127.0.0.1", "x:1"), reply: 5, replyName: "connection refused" });
  ring.session({ ...refusedRecord(2, "127.0.0.1", "x:1"), reply: 0, replyName: "succeeded" });
  assert.equal(ring.list().length, 0, "an allowed decision, a failed dial and a success are no denials");
  // SOCKS4 says which SOCKS5 reply its 91 stands for.
  ring.session({
    ...refusedRecord(3, "127.0.0.1", "y:1"),
    reply: 91,
    replyName: "request rejected or failed (connection not allowed by ruleset)",
  });
  ring.session({
    ...refusedRecord(4, "127.0.0.1", "y:1"),
    reply: 91,
    replyName: "request rejected or failed (host unreachable)",
  });
  assert.deepEqual(
    ring.list().map((d) => d.session),
    ["3"],
  );
  for (let i = 10; i < 20; i++) ring.session(refusedRecord(i, "127.0.0.1", `t${i}:1`));
  assert.deepEqual(
    ring.list().map((d) => d.session),
    ["19", "18", "17"],
  );
});
