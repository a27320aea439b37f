import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { ConfigError, loadConfig } from "../../src/config/load.js";
import { formatRate, parseRate } from "../../src/config/units.js";
import { decide, type Facts } from "../../src/policy/decide.js";
import type { Decision, Policy, RequestQuery } from "../../src/policy/policy.js";
import { buildPolicy } from "../../src/policy/rule-policy.js";
import { isSelf, withSelfGuard } from "../../src/policy/self.js";
import { addressOf } from "../../src/protocol/address.js";
import { TokenBucket } from "../../src/server/limits.js";

/** Loads a configuration text through the real loader (schema, lines, checks) into a Policy. */
async function policyOf(yaml: string): Promise<Policy> {
  const dir = await mkdtemp(path.join(tmpdir(), "ferry-policy-"));
  try {
    const file = path.join(dir, "ferry.yaml");
    await writeFile(file, yaml);
    return buildPolicy(await loadConfig({ file }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function configError(yaml: string): Promise<string> {
  try {
    await policyOf(yaml);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.message;
  }
  assert.fail("the configuration was accepted");
}

const q = (over: Partial<RequestQuery> & { to?: string } = {}): RequestQuery => {
  const { to = "192.0.2.10:443", ...rest } = over;
  const [host, port] = [to.slice(0, to.lastIndexOf(":")), Number(to.slice(to.lastIndexOf(":") + 1))];
  return {
    client: "127.0.0.1",
    method: "none",
    version: 5,
    command: "connect",
    target: addressOf(host, port),
    ...rest,
  };
};

/** A rule list with one allow rule then `deny: {}`: the verdict says whether the allow rule matched. */
async function allowOnly(body: string): Promise<Policy> {
  return policyOf(`rules:\n  - allow: ${body}\n  - deny: {}\n`);
}

const verdict = (d: Decision): string => d.verdict;

describe("decide: each rule dimension allows and denies", () => {
  test("from (client address, v4 and v6)", async () => {
    const p = await allowOnly('{ from: [10.1.0.0/16, "fd00::/8"] }');
    assert.equal(verdict(p.destination(q({ client: "10.1.2.3" }))), "allow");
    assert.equal(verdict(p.destination(q({ client: "fd00::5" }))), "allow");
    assert.equal(verdict(p.destination(q({ client: "10.2.0.1" }))), "deny");
    assert.equal(verdict(p.destination(q({ client: "fe80::1" }))), "deny");
  });

  test("users: only the authenticated user listed", async () => {
    const p = await allowOnly("{ users: [alice] }");
    assert.equal(verdict(p.destination(q({ user: "alice", method: "userpass" }))), "allow");
    assert.equal(verdict(p.destination(q({ user: "bob", method: "userpass" }))), "deny");
    assert.equal(verdict(p.destination(q())), "deny", "no user at all never matches users:");
  });

  test("groups: members of a listed group", async () => {
    const p = await policyOf(
      "groups: { staff: [alice], ops: [carol] }\nrules:\n  - allow: { groups: [staff] }\n  - deny: {}\n",
    );
    assert.equal(verdict(p.destination(q({ user: "alice" }))), "allow");
    assert.equal(verdict(p.destination(q({ user: "carol" }))), "deny");
    assert.equal(verdict(p.destination(q())), "deny");
  });

  test("methods", async () => {
    const p = await allowOnly("{ methods: [userpass] }");
    assert.equal(verdict(p.destination(q({ method: "userpass", user: "a" }))), "allow");
    assert.equal(verdict(p.destination(q({ method: "none" }))), "deny");
  });

  test("versions", async () => {
    const p = await allowOnly("{ versions: [5] }");
    assert.equal(verdict(p.destination(q({ version: 5 }))), "allow");
    assert.equal(verdict(p.destination(q({ version: 4 }))), "deny");
  });

  test("commands", async () => {
    const p = await allowOnly("{ commands: [connect, udp] }");
    assert.equal(verdict(p.destination(q({ command: "connect" }))), "allow");
    assert.equal(verdict(p.destination(q({ command: "udp" }))), "allow");
    assert.equal(verdict(p.destination(q({ command: "bind" }))), "deny");
  });

  test("to: IPv4 and IPv6 ranges, single addresses, IPv4-mapped IPv6", async () => {
    const p = await allowOnly('{ to: [198.51.100.0/24, "2001:db8::/32", 192.0.2.7] }');
    assert.equal(verdict(p.destination(q({ to: "198.51.100.9:80" }))), "allow");
    assert.equal(verdict(p.destination(q({ to: "[2001:db8::1]:80" }))), "allow");
    assert.equal(verdict(p.destination(q({ to: "192.0.2.7:80" }))), "allow");
    assert.equal(verdict(p.destination(q({ to: "[::ffff:198.51.100.9]:80" }))), "allow", "mapped is IPv4");
    assert.equal(verdict(p.destination(q({ to: "192.0.2.8:80" }))), "deny");
    assert.equal(verdict(p.destination(q({ to: "[2001:db9::1]:80" }))), "deny");
  });

  test("a deny range cannot be dodged with an IPv4-mapped IPv6 literal", async () => {
    const p = await policyOf("rules:\n  - deny: { to: [127.0.0.0/8] }\n  - allow: {}\n");
    assert.equal(verdict(p.destination(q({ to: "[::ffff:127.0.0.1]:22" }))), "deny");
    assert.equal(verdict(p.destination(q({ to: "example.net:22" }), "::ffff:127.0.0.1")), "deny");
  });

  test("to: exact names and *.wildcards (case and trailing dot ignored)", async () => {
    const p = await allowOnly('{ to: ["*.example.com", "exact.test"] }');
    assert.equal(verdict(p.destination(q({ to: "www.example.com:443" }))), "allow");
    assert.equal(verdict(p.destination(q({ to: "a.b.EXAMPLE.com.:443" }))), "allow");
    assert.equal(verdict(p.destination(q({ to: "exact.test:443" }))), "allow");
    assert.equal(
      verdict(p.destination(q({ to: "example.com:443" }))),
      "deny",
      "the wildcard is below the name only",
    );
    assert.equal(verdict(p.destination(q({ to: "notexample.com:443" }))), "deny");
    assert.equal(verdict(p.destination(q({ to: "www.exact.test:443" }))), "deny");
    assert.equal(
      verdict(p.destination(q({ to: "192.0.2.1:443" }))),
      "deny",
      "names never match an IP literal",
    );
  });

  test("ports: lists and ranges", async () => {
    const p = await allowOnly('{ ports: [80, 443, "8000-8999"] }');
    for (const port of [80, 443, 8000, 8500, 8999]) {
      assert.equal(verdict(p.destination(q({ to: `192.0.2.1:${port}` }))), "allow", `port ${port}`);
    }
    for (const port of [22, 7999, 9000]) {
      assert.equal(verdict(p.destination(q({ to: `192.0.2.1:${port}` }))), "deny", `port ${port}`);
    }
  });

  test("clients stage: from, with the end of the list denying", async () => {
    const p = await policyOf(
      "clients:\n  - deny: { from: [127.0.0.2] }\n  - allow: { from: [127.0.0.0/8] }\n",
    );
    assert.equal(p.client("127.0.0.1").verdict, "allow");
    assert.equal(p.client("127.0.0.2").verdict, "deny");
    const d = p.client("192.0.2.1");
    assert.equal(d.verdict, "deny");
    assert.equal(d.rule, "end of clients");
  });
});

describe("decide: order, defaults, names and explanations", () => {
  test("the first matching rule wins and is named with its file line", async () => {
    const p = await policyOf(
      ["rules:", "  - allow: { ports: [80] }", "  - deny: { to: [192.0.2.0/24] }", "  - allow: {}", ""].join(
        "\n",
      ),
    );
    const a = p.destination(q({ to: "192.0.2.1:80" }));
    assert.equal(a.verdict, "allow");
    assert.equal(a.rule, "rules[0] (ferry.yaml:2)");
    assert.equal(a.line, 2);
    const b = p.destination(q({ to: "192.0.2.1:81" }));
    assert.equal(b.verdict, "deny");
    assert.equal(b.rule, "rules[1] (ferry.yaml:3)");
    assert.equal(p.destination(q({ to: "198.51.100.1:81" })).rule, "rules[2] (ferry.yaml:4)");
  });

  test("no rules: loopback clients only, every destination", async () => {
    const p = await policyOf("listen: ['127.0.0.1:1080']\n");
    assert.equal(p.client("127.0.0.1").verdict, "allow");
    assert.equal(p.client("::1").verdict, "allow");
    assert.equal(p.client("::ffff:127.0.0.1").verdict, "allow");
    assert.equal(p.client("192.0.2.1").verdict, "deny");
    assert.equal(p.destination(q({ to: "10.0.0.1:22" })).verdict, "allow");
    assert.equal(p.destination(q({ to: "x.test:22" }), "169.254.169.254").verdict, "allow");
  });

  test("rules that match nothing deny at the end", async () => {
    const p = await policyOf("rules:\n  - allow: { users: [alice] }\n");
    const d = p.destination(q());
    assert.equal(d.verdict, "deny");
    assert.equal(d.rule, "end of rules");
  });

  test("a name with its address: a denied address range catches it", async () => {
    const p = await policyOf(
      "rules:\n  - deny: { to: [127.0.0.0/8] }\n  - allow: { to: [localhost] }\n  - deny: {}\n",
    );
    const byAddress = p.destination(q({ to: "localhost:80" }), "127.0.0.1");
    assert.equal(byAddress.verdict, "deny");
    assert.equal(byAddress.rule, "rules[0] (ferry.yaml:2)");
    const elsewhere = p.destination(q({ to: "localhost:80" }), "192.0.2.1", { explain: true });
    assert.equal(elsewhere.verdict, "allow");
    assert.equal(elsewhere.rule, "rules[1] (ferry.yaml:3)");
    assert.equal(elsewhere.unchecked, undefined, "every range was checked against the address");
  });

  test("a name left unresolved: an address range never admits it and a denied range refuses it", async () => {
    const allowRange = await policyOf("rules:\n  - allow: { to: [198.51.100.0/24] }\n  - deny: {}\n");
    const d = allowRange.destination(q({ to: "svc.test:80" }), undefined, { explain: true });
    assert.equal(d.verdict, "deny");
    assert.equal(d.rule, "rules[1] (ferry.yaml:3)");
    assert.equal(d.unchecked, true, "the range could not be checked, so its addresses may decide");
    assert.match(d.trace?.[0]?.why ?? "", /never admits a name the upstream resolves/);
    assert.equal(allowRange.destination(q({ to: "svc.test:80" }), "198.51.100.5").verdict, "allow");
    assert.equal(allowRange.destination(q({ to: "svc.test:80" }), "192.0.2.5").verdict, "deny");

    const denyRange = await policyOf("rules:\n  - deny: { to: [127.0.0.0/8] }\n  - allow: {}\n");
    const refused = denyRange.destination(q({ to: "anything.test:80" }));
    assert.equal(refused.verdict, "deny", "fail closed: the upstream might resolve it into the range");
    assert.equal(refused.rule, "rules[0] (ferry.yaml:2)");
    assert.equal(refused.unchecked, true);
    const byName = await policyOf("rules:\n  - deny: { to: [blocked.test] }\n  - allow: {}\n");
    assert.equal(byName.destination(q({ to: "blocked.test:80" })).unchecked, undefined);
  });

  test("UDP ASSOCIATE: destinations and ports are decided per datagram, by address", async () => {
    const p = await policyOf(
      'rules:\n  - deny: { to: [10.0.0.0/8] }\n  - allow: { commands: [udp], to: ["*.example.com"], ports: [53] }\n  - deny: {}\n',
    );
    const association = q({ command: "udp", to: "0.0.0.0:40000" });
    const d = p.command(association);
    assert.equal(d.verdict, "allow", "the association is admitted pending each datagram");
    assert.equal(d.pending, true);
    const dns = q({ command: "udp", to: "ns.example.com:53" });
    assert.equal(p.destination(dns, "192.0.2.53").verdict, "allow");
    assert.equal(p.destination(dns, "10.0.0.53").verdict, "deny");
    assert.equal(p.destination(q({ command: "udp", to: "ns.example.com:54" }), "192.0.2.53").verdict, "deny");
    assert.equal(p.destination(q({ command: "udp", to: "192.0.2.53:53" }), "192.0.2.53").verdict, "deny");
    assert.equal(p.destination(q({ command: "connect", to: "0.0.0.0:40000" })).verdict, "deny");
  });

  test("explain says why each earlier rule did not match", async () => {
    const p = await policyOf(
      "groups: { staff: [alice] }\nrules:\n  - allow: { users: [alice] }\n  - allow: { groups: [staff] }\n  - allow: { ports: [80] }\n  - deny: {}\n",
    );
    const d = p.destination(q({ user: "bob", to: "192.0.2.1:22" }), undefined, { explain: true });
    assert.equal(d.verdict, "deny");
    assert.deepEqual(
      d.trace?.map((t) => [t.rule, t.outcome, t.why]),
      [
        ["rules[0] (ferry.yaml:3)", "not matched", "user bob is not one of alice"],
        ["rules[1] (ferry.yaml:4)", "not matched", "user bob is in none of the groups staff"],
        ["rules[2] (ferry.yaml:5)", "not matched", "port 22 is not in 80"],
        ["rules[3] (ferry.yaml:6)", "matched", "it matches everything"],
      ],
    );
    assert.equal(p.destination(q()).trace, undefined, "no trace unless asked");
  });

  test("log and caps are carried by the deciding rule", async () => {
    const p = await policyOf(
      "rules:\n  - allow: { ports: [80], bandwidth: 1MiB/s, sessions: 3, log: true }\n",
    );
    const d = p.destination(q({ to: "192.0.2.1:80" }));
    assert.equal(d.log, true);
    assert.deepEqual(d.caps, { key: "rules[0]", bandwidth: 1024 * 1024, sessions: 3 });
  });

  test("decide is pure: the same facts give the same decision", () => {
    const rules = [
      { action: "deny" as const, stage: "rules" as const, index: 0, log: false, commands: ["bind" as const] },
    ];
    const facts: Facts = { client: "127.0.0.1", command: "bind", target: addressOf("192.0.2.1", 1) };
    assert.deepEqual(decide(rules, facts), decide(rules, facts));
    assert.equal(decide(rules, facts).verdict, "deny");
  });
});

describe("rule configuration errors name the key, the line and the fix", () => {
  test("a bad range", async () => {
    const m = await configError("rules:\n  - allow: { users: [a] }\n  - deny: { to: [10.0.0.0/33] }\n");
    assert.match(m, /ferry\.yaml:3: rules\.1\.deny\.to\.0: "10\.0\.0\.0\/33" is not an address range/);
  });
  test("a misspelt key gets a suggestion", async () => {
    const m = await configError("rules:\n  - allow: { user: [alice] }\n");
    assert.match(m, /rules\.0\.allow\.user: unknown key \(did you mean "users"\?\)/);
  });
  test("an undefined group", async () => {
    const m = await configError("groups: { staff: [a] }\nrules:\n  - allow: { groups: [staf] }\n");
    assert.match(
      m,
      /ferry\.yaml:3: rules\.0\.allow\.groups: group "staf" is not defined; defined groups: staff/,
    );
  });
  test("an empty list, both actions, caps on a deny, a bad port range, a bare *", async () => {
    assert.match(await configError("rules:\n  - allow: { users: [] }\n"), /empty list matches nothing/);
    assert.match(await configError("rules:\n  - { allow: {}, deny: {} }\n"), /either allow or deny/);
    assert.match(await configError("rules:\n  - deny: { sessions: 3 }\n"), /only make sense on allow rules/);
    assert.match(await configError('rules:\n  - allow: { ports: ["9-1"] }\n'), /not a port or port range/);
    assert.match(await configError('rules:\n  - allow: { to: ["*"] }\n'), /leave out "to"/);
  });
});

describe("self guard, rates and buckets", () => {
  test("isSelf: exact, unspecified listeners and unspecified targets", () => {
    const eps = [
      { host: "127.0.0.1", port: 1080 },
      { host: "0.0.0.0", port: 2080 },
    ];
    assert.equal(isSelf("127.0.0.1", 1080, eps), true);
    assert.equal(isSelf("::ffff:127.0.0.1", 1080, eps), true);
    assert.equal(isSelf("127.0.0.1", 1081, eps), false);
    assert.equal(isSelf("0.0.0.0", 1080, eps), true);
    assert.equal(isSelf("127.0.0.5", 2080, eps), true, "0.0.0.0 answers on all of loopback");
    assert.equal(
      isSelf("192.0.2.99", 2080, eps, () => ["192.0.2.99"]),
      true,
      "and on interface addresses",
    );
    assert.equal(
      isSelf("198.51.100.1", 2080, eps, () => ["192.0.2.99"]),
      false,
    );
  });

  test("withSelfGuard denies our own sockets whatever the rules say", async () => {
    const p = withSelfGuard(await policyOf("rules:\n  - allow: {}\n"), () => [
      { host: "127.0.0.1", port: 1080 },
    ]);
    assert.equal(p.destination(q({ to: "127.0.0.1:1080" })).rule, "self");
    assert.equal(p.destination(q({ to: "localhost:1080" }), "127.0.0.1").rule, "self");
    assert.equal(p.destination(q({ to: "localhost:1081" }), "127.0.0.1").verdict, "allow");
  });

  test("parseRate understands the units people write", () => {
    assert.equal(parseRate("10MiB/s"), 10 * 1024 * 1024);
    assert.equal(parseRate("512 KiB/s"), 512 * 1024);
    assert.equal(parseRate("1MB/s"), 1_000_000);
    assert.equal(parseRate("100Mbit/s"), 12_500_000);
    assert.equal(parseRate(4096), 4096);
    assert.throws(() => parseRate("fast"), /not a rate; write it like 10MiB\/s/);
    assert.throws(() => parseRate("10 parsecs/s"), /not a rate/);
    assert.equal(formatRate(10 * 1024 * 1024), "10MiB/s");
  });

  test("a token bucket lets a burst through, then asks for the time the debt takes to repay", () => {
    const t0 = performance.now();
    const b = new TokenBucket(1000, 500);
    assert.equal(b.take(500), 0);
    const wait = b.take(1000);
    // The bucket refills with real time: whatever passed between the calls (a loaded machine may
    // pause us) is repaid already.
    const spent = performance.now() - t0;
    assert.ok(
      wait >= 1000 - spent - 1 && wait <= 1000,
      `1000 bytes of debt at 1000 B/s is about a second, got ${wait} after ${spent} ms`,
    );
  });
});
