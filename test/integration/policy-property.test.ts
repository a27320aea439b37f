import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { check } from "../../src/cli/check.js";
import type { FileConfig } from "../../src/config/schema.js";
import { buildOutbound } from "../../src/dial/build-outbound.js";
import type { Resolved } from "../../src/dial/family.js";
import { normalizeIp } from "../../src/policy/addresses.js";
import { addressOf, formatAddress } from "../../src/protocol/address.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { waitFor } from "../helpers/net.js";
import { bytes, socks5Request } from "../helpers/socks-raw.js";

/**
 * The invariant of issue 11: what the live path lets out equals what `ferry check` decides for
 * what is finally used. Random rule sets (names, wildcards, ranges, ports, routes of each kind)
 * and random requests (names, literals, mapped and unspecified addresses) run against a live
 * server whose targets are loopback listeners and whose upstreams are two more Ferry servers,
 * one reached as socks5h (it resolves names) and one as socks5 (we resolve). For every request:
 * the reply is success exactly when `ferry check` allows; then the check's rule is the record's,
 * the check's route is the one the bytes took, and what arrived is what was checked.
 */

const NAMES: Record<string, string[]> = {
  "a.test": ["127.0.0.2"],
  "b.test": ["127.0.0.3", "127.0.0.1"],
  localhost: ["127.0.0.1"],
};
const lookup = async (host: string): Promise<Resolved[]> => {
  const found = NAMES[host];
  if (!found) throw Object.assign(new Error(`${host} not found`), { code: "ENOTFOUND" });
  return found.map((address) => ({ address, family: 4 }));
};

interface Target {
  host: string;
  arrivals: number;
  close(): void;
}
let port = 0;
const targets: Target[] = [];
let upH: RunningFerry;
let up4: RunningFerry;
let dir: string;

async function listenOn(host: string, p: number): Promise<Target | undefined> {
  const t: Target = { host, arrivals: 0, close: () => {} };
  const server = net.createServer((s) => {
    t.arrivals++;
    s.on("error", () => {});
    s.end("hello");
  });
  server.on("error", () => {});
  server.listen(p, host);
  const ok = await Promise.race([
    once(server, "listening").then(() => true),
    once(server, "error").then(() => false),
  ]);
  if (!ok) return undefined;
  t.close = () => server.close();
  return t;
}

before(async () => {
  // One port free on 127.0.0.1, .2 and .3, so port rules mean the same for every target.
  for (let i = 0; i < 20; i++) {
    const p = await new Promise<number>((resolve) => {
      const s = net.createServer();
      s.listen(0, "127.0.0.1", () => {
        const got = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(got));
      });
    });
    const all = [
      await listenOn("127.0.0.1", p),
      await listenOn("127.0.0.2", p),
      await listenOn("127.0.0.3", p),
    ];
    if (all.every((t) => t)) {
      targets.push(...(all as Target[]));
      port = p;
      break;
    }
    for (const t of all) t?.close();
  }
  assert.equal(targets.length, 3, "one port free on 127.0.0.1, .2 and .3");
  const withLookup = (ctx: Parameters<NonNullable<Parameters<typeof startFerry>[2]>>[0]) => ({
    ...ctx,
    outbound: buildOutbound(ctx.config, ctx.policy, { lookup }),
  });
  upH = await startFerry({}, {}, withLookup);
  up4 = await startFerry({}, {}, withLookup);
  dir = await mkdtemp(path.join(tmpdir(), "ferry-property-"));
});

after(async () => {
  for (const t of targets) t.close();
  await upH?.close();
  await up4?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const destinations = ["127.0.0.2", "127.0.0.3/32", "127.0.0.0/31", "a.test", "*.test", "localhost", "b.test"];
type RuleBody = { to?: string[]; ports?: number[]; via?: string };
const ruleArb = fc.record(
  {
    action: fc.constantFrom("allow", "deny"),
    to: fc.subarray(destinations, { minLength: 1, maxLength: 3 }),
    ports: fc.constantFrom("same", "other"),
    via: fc.constantFrom("direct", "up", "up4"),
  },
  { requiredKeys: ["action"] },
);
const requestArb = fc.constantFrom(
  "127.0.0.1",
  "127.0.0.2",
  "127.0.0.3",
  "::ffff:127.0.0.2",
  "0.0.0.0",
  "a.test",
  "b.test",
  "localhost",
  "LocalHost.",
);

test("what the live path lets out equals what ferry check decides for what is used", {
  timeout: 240_000,
}, async () => {
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(ruleArb, { maxLength: 4 }),
      fc.array(requestArb, { minLength: 1, maxLength: 3 }),
      async (drawn, requests) => {
        runs++;
        const rules = drawn.map((r) => {
          const body: RuleBody = {};
          if (r.to) body.to = r.to;
          if (r.ports) body.ports = [r.ports === "same" ? port : port + 1];
          if (r.via && r.action === "allow") body.via = r.via;
          return { [r.action]: body };
        });
        const config = {
          upstreams: {
            up: { url: `socks5h://127.0.0.1:${upH.port}` },
            up4: { url: `socks5://127.0.0.1:${up4.port}` },
          },
          rules,
        } as Partial<FileConfig>;
        const file = path.join(dir, `ferry-${runs}.json`);
        await writeFile(file, JSON.stringify({ ...config, listen: ["127.0.0.1:1"] }));
        const ferry = await startFerry(config, {}, (ctx) => ({
          ...ctx,
          outbound: buildOutbound(ctx.config, ctx.policy, { lookup }),
        }));
        try {
          for (const host of requests) await oneRequest(ferry, file, host);
        } finally {
          await ferry.close();
        }
      },
    ),
    { numRuns: 40 },
  );
});

async function oneRequest(ferry: RunningFerry, file: string, host: string): Promise<void> {
  const target = addressOf(host, port);
  const lines: string[] = [];
  const exit = await check(
    {
      config: file,
      from: "127.0.0.1",
      to: formatAddress(target),
      ...(NAMES[target.host.toLowerCase().replace(/\.$/, "")] && {
        resolve: NAMES[target.host.toLowerCase().replace(/\.$/, "")],
      }),
    },
    (l) => lines.push(l),
  );
  const said = lines.join("\n");
  const checkRule = /^(?:ALLOW|DENY) by (.*)$/m.exec(said)?.[1];
  const checkRoute = /^route: (.*)$/m.exec(said)?.[1];
  const before = targets.map((t) => t.arrivals);
  const upBefore = [
    upH.records.length + upH.server.activeSessions,
    up4.records.length + up4.server.activeSessions,
  ];
  const recordP = ferry.nextRecord();
  const r = await socks5Request(ferry, "connect", target);
  const context = `${host} under ${JSON.stringify(ferry.context.config.rules)}:\n${said}`;
  if (r.reply.reply === 0) {
    assert.equal((await r.reader.read(bytes(5))).toString(), "hello", context);
  }
  r.socket.destroy();
  const record = await recordP;
  const arrivedAt = targets.filter((t, i) => t.arrivals > before[i]!).map((t) => t.host);
  assert.equal(
    exit === 0,
    r.reply.reply === 0,
    `live reply ${r.reply.reply} vs check exit ${exit}: ${context}`,
  );
  if (r.reply.reply !== 0) {
    assert.deepEqual(arrivedAt, [], `refused, yet something arrived: ${context}`);
    return;
  }
  assert.equal(record.rule?.replace(/ \(.*\)$/, ""), checkRule?.replace(/ \(.*\)$/, ""), `rule: ${context}`);
  assert.equal(arrivedAt.length, 1, `exactly one target reached: ${context}`);
  // The route the bytes took: the upstream whose sessions grew, or none.
  const upUsed =
    upH.records.length + upH.server.activeSessions > upBefore[0]!
      ? "up"
      : up4.records.length + up4.server.activeSessions > upBefore[1]!
        ? "up4"
        : "direct";
  assert.equal(upUsed, checkRoute, `route: ${context}`);
  // What arrived was what was checked: the literal, or an address the check allowed.
  const bare = target.type === "domain" ? undefined : normalizeIp(target.host);
  const resolved = bare ? [bare] : (NAMES[target.host.toLowerCase().replace(/\.$/, "")] ?? []);
  assert.ok(
    resolved.includes(arrivedAt[0]!),
    `arrived at ${arrivedAt[0]}, not an address of ${host}: ${context}`,
  );
  if (upUsed !== "direct") {
    const up = upUsed === "up" ? upH : up4;
    await waitFor(() => up.records.length > 0, 10_000, "the upstream's record");
  }
}
