import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, describe, test } from "node:test";
import { buildOutbound } from "../../src/dial/build-outbound.js";
import type { Resolved } from "../../src/dial/family.js";
import { addressOf, type SocksAddress } from "../../src/protocol/address.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../../src/protocol/udp.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { waitFor } from "../helpers/net.js";
import { bytes, socks4Request, socks5Request } from "../helpers/socks-raw.js";
import { pause, sendTo, startUdpEcho, udpClient } from "../helpers/udp.js";

/**
 * The security review's findings (issue 11), each replayed on a live server. Every proxy here
 * allows only loopback targets, and denials are tested with loopback addresses: a listener on the
 * denied address proves that nothing arrives there.
 */

/** A TCP listener that only counts who arrives. */
async function tally(host: string, port = 0): Promise<{ port: number; arrivals: string[]; close(): void }> {
  const arrivals: string[] = [];
  const server = net.createServer((s) => {
    arrivals.push(s.remoteAddress ?? "?");
    s.on("error", () => {});
    s.end("hello");
  });
  server.listen(port, host);
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, arrivals, close: () => server.close() };
}

const stops: (() => unknown)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

/** A second Ferry as the upstream (no rules: every loopback target); its records say what it was asked. */
async function upstream(): Promise<RunningFerry> {
  const up = await startFerry({});
  stops.push(up.close);
  return up;
}

const via = (up: RunningFerry, scheme: string) => ({ up: { url: `${scheme}://127.0.0.1:${up.port}` } });

describe("UDP through an upstream obeys the same rules as direct UDP (finding 2)", {
  timeout: 60_000,
}, () => {
  test("a datagram to a denied address is dropped, an allowed one goes through the upstream", async () => {
    const up = await upstream();
    const denied = await startUdpEcho("127.0.0.2");
    const allowed = await startUdpEcho("127.0.0.1");
    stops.push(denied.close, allowed.close);
    const ferry = await startFerry({
      upstreams: via(up, "socks5"),
      rules: [{ deny: { to: ["127.0.0.2"] } }, { allow: { commands: ["udp"], via: "up" } }, { deny: {} }],
    });
    stops.push(ferry.close);
    const client = await udpClient();
    const control = await socks5Request(ferry, "udp", addressOf("0.0.0.0", client.port));
    assert.equal(control.reply.reply, 0);
    const relay = control.reply.address;
    const send = (to: SocksAddress, data: string) =>
      sendTo(
        client.socket,
        encodeUdpDatagram({ frag: 0, address: to, data: Buffer.from(data) }),
        relay.port,
        relay.host,
      );
    await send(addressOf("127.0.0.2", denied.port), "must not arrive");
    await send(addressOf("127.0.0.1", allowed.port), "through the upstream");
    const back = await client.next(10_000);
    assert.ok(back, "the allowed datagram's echo came back");
    assert.equal(parseUdpDatagram(back).data.toString(), "through the upstream");
    await pause(200);
    assert.equal(denied.received.length, 0, "nothing reached the denied address");
    const record = ferry.nextRecord();
    control.socket.end();
    const r = await record;
    assert.equal(r.datagramsDropped?.denied, 1);
    assert.equal(r.datagramsUp, 1);
    await waitFor(
      () => up.records.some((x) => x.command === "udp"),
      10_000,
      "the upstream's association record",
    );
    assert.equal(up.records.find((x) => x.command === "udp")!.datagramsUp, 1, "it went through the upstream");
    client.close();
  });
});

describe("an address range never admits a name an upstream resolves (finding 3)", { timeout: 60_000 }, () => {
  test("socks5h, socks4a and HTTP-style remote resolution: a name outside the range is refused", async () => {
    const up = await upstream();
    const target = await tally("127.0.0.1");
    stops.push(target.close);
    for (const scheme of ["socks5h", "socks4a"]) {
      const ferry = await startFerry({
        upstreams: via(up, scheme),
        rules: [{ allow: { to: ["127.0.0.3/32"], via: "up" } }, { deny: {} }],
      });
      stops.push(ferry.close);
      const before = up.records.length;
      const record = ferry.nextRecord();
      const r = await socks5Request(ferry, "connect", addressOf("localhost", target.port));
      assert.equal(r.reply.reply, 0x02, `${scheme}: localhost is not in 127.0.0.3/32`);
      const rec = await record;
      assert.match(rec.reason ?? "", /localhost resolves only to denied addresses/);
      r.socket.destroy();
      await pause(100);
      assert.equal(
        up.records.length + up.server.activeSessions,
        before,
        `${scheme}: the upstream was never asked`,
      );
    }
    assert.deepEqual(target.arrivals, [], "nothing arrived");
  });

  test("a name whose address is in the range goes to the upstream as that address, not as the name", async () => {
    const up = await upstream();
    const target = await tally("127.0.0.3");
    stops.push(target.close);
    const lookup = async (host: string): Promise<Resolved[]> => {
      if (host === "three.test") return [{ address: "127.0.0.3", family: 4 }];
      throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
    };
    const ferry = await startFerry(
      {
        upstreams: via(up, "socks5h"),
        rules: [{ allow: { to: ["127.0.0.3/32"], via: "up" } }, { deny: {} }],
      },
      {},
      (ctx) => ({ ...ctx, outbound: buildOutbound(ctx.config, ctx.policy, { lookup }) }),
    );
    stops.push(ferry.close);
    const upRecord = up.nextRecord();
    const r = await socks5Request(ferry, "connect", addressOf("three.test", target.port));
    assert.equal(r.reply.reply, 0);
    assert.equal((await r.reader.read(bytes(5))).toString(), "hello");
    r.socket.destroy();
    assert.equal(
      (await upRecord).target,
      `127.0.0.3:${target.port}`,
      "the checked address is what the upstream got",
    );
    await waitFor(() => target.arrivals.length === 1, 10_000, "the arrival");
  });
});

describe("the rule that admits the address is the one whose caps apply (finding 4)", {
  timeout: 60_000,
}, () => {
  test("by name and by literal, the same target gets the same rule and the same session cap", async () => {
    const target = await tally("127.0.0.1");
    stops.push(target.close);
    const ferry = await startFerry({
      rules: [{ allow: { to: ["127.0.0.3/32"] } }, { allow: { sessions: 1 } }],
    });
    stops.push(ferry.close);
    const first = await socks5Request(ferry, "connect", addressOf("127.0.0.1", target.port));
    assert.equal(first.reply.reply, 0);
    const record = ferry.nextRecord();
    const second = await socks5Request(ferry, "connect", addressOf("localhost", target.port));
    assert.equal(second.reply.reply, 0x02, "the rule's one session is taken, by name as by literal");
    const r = await record;
    assert.equal(r.rule, "rules[1]");
    assert.match(r.reason ?? "", /already admits 1 sessions/);
    second.socket.destroy();
    const firstRecord = ferry.nextRecord();
    first.socket.destroy();
    assert.equal((await firstRecord).rule, "rules[1]");
  });
});

describe("a UDP association belongs to its client's port (finding 6)", { timeout: 60_000 }, () => {
  test("with DST.PORT 0 the first datagram pins the port; another port of the same address is dropped", async () => {
    const echo = await startUdpEcho("127.0.0.1");
    stops.push(echo.close);
    const ferry = await startFerry({});
    stops.push(ferry.close);
    const owner = await udpClient();
    const intruder = await udpClient();
    const control = await socks5Request(ferry, "udp", addressOf("0.0.0.0", 0));
    assert.equal(control.reply.reply, 0);
    const relay = control.reply.address;
    const packet = (data: string) =>
      encodeUdpDatagram({ frag: 0, address: addressOf("127.0.0.1", echo.port), data: Buffer.from(data) });
    await sendTo(owner.socket, packet("owner 1"), relay.port, relay.host);
    assert.equal(parseUdpDatagram((await owner.next(10_000))!).data.toString(), "owner 1");
    await sendTo(intruder.socket, packet("intruder"), relay.port, relay.host);
    await sendTo(owner.socket, packet("owner 2"), relay.port, relay.host);
    assert.equal(parseUdpDatagram((await owner.next(10_000))!).data.toString(), "owner 2");
    await pause(200);
    assert.deepEqual(
      echo.received.map((b) => b.toString()),
      ["owner 1", "owner 2"],
      "the intruder's datagram never left",
    );
    assert.equal(intruder.received.length, 0, "and nothing was sent to the intruder");
    const record = ferry.nextRecord();
    control.socket.end();
    assert.equal((await record).datagramsDropped?.["wrong source"], 1);
    owner.close();
    intruder.close();
  });
});

describe("unspecified addresses are never a destination (finding 8)", { timeout: 60_000 }, () => {
  test("0.0.0.0, ::, ::ffff:0.0.0.0 and SOCKS4 0.0.0.0 do not reach loopback services", async () => {
    const v4 = await tally("127.0.0.1");
    stops.push(v4.close);
    const v6 = await tally("::1", v4.port).catch(() => undefined);
    if (v6) stops.push(v6.close);
    const ferry = await startFerry({ rules: [{ deny: { to: ["127.0.0.0/8", "::1/128"] } }, { allow: {} }] });
    stops.push(ferry.close);
    for (const host of ["0.0.0.0", "::", "::ffff:0.0.0.0", "0.1.2.3"]) {
      const record = ferry.nextRecord();
      const r = await socks5Request(ferry, "connect", addressOf(host, v4.port));
      assert.equal(r.reply.reply, 0x02, host);
      assert.match((await record).reason ?? "", /unspecified address/);
      r.socket.destroy();
    }
    const four = await socks4Request(ferry, "connect", addressOf("0.0.0.0", v4.port));
    assert.equal(four.reply.reply, 91, "SOCKS4 0.0.0.0");
    four.socket.destroy();
    // With no rules at all, too.
    const open = await startFerry({});
    stops.push(open.close);
    const r = await socks5Request(open, "connect", addressOf("0.0.0.0", v4.port));
    assert.equal(r.reply.reply, 0x02);
    r.socket.destroy();
    await pause(100);
    assert.deepEqual(v4.arrivals, []);
    assert.deepEqual(v6?.arrivals ?? [], []);
  });
});

describe("BIND through an upstream decides the peer it reports (seen in review)", { timeout: 60_000 }, () => {
  test("a peer from a denied address is refused with 0x02 and none of its bytes reach the client", async () => {
    const up = await upstream();
    const ferry = await startFerry({
      upstreams: via(up, "socks5"),
      rules: [{ deny: { to: ["127.0.0.2"] } }, { allow: { via: "up" } }],
    });
    stops.push(ferry.close);
    const bind = await socks5Request(ferry, "bind", addressOf("0.0.0.0", 0));
    assert.equal(bind.reply.reply, 0);
    const where = bind.reply.address;
    const record = ferry.nextRecord();
    const peer = net.connect({ host: where.host, port: where.port, localAddress: "127.0.0.2" });
    peer.on("error", () => {});
    await once(peer, "connect");
    peer.write("secret from a denied peer");
    const second = await bind.next();
    assert.equal(second.reply, 0x02, "the second reply refuses the peer");
    const r = await record;
    assert.match(r.reason ?? "", /127\.0\.0\.2 .*not allowed/);
    assert.equal(r.bytesDown, 0);
    bind.socket.destroy();
    peer.destroy();
  });
});

describe("one client cannot starve name resolution for the others (seen in review)", {
  timeout: 60_000,
}, () => {
  test("hung lookups of one client are bounded and time out; another client's name still resolves", async () => {
    const target = await tally("127.0.0.1");
    stops.push(target.close);
    // getaddrinfo as libuv runs it: four threads, the rest wait; names under hang.test never answer.
    let running = 0;
    const waiting: (() => void)[] = [];
    const lookup = async (host: string): Promise<Resolved[]> => {
      if (running >= 4) await new Promise<void>((r) => waiting.push(r));
      running++;
      if (host.endsWith(".hang.test")) return new Promise<Resolved[]>(() => {});
      running--;
      waiting.shift()?.();
      return [{ address: "127.0.0.1", family: 4 }];
    };
    const ferry = await startFerry({ timeouts: { connect: "2s" } }, {}, (ctx) => ({
      ...ctx,
      outbound: buildOutbound(ctx.config, ctx.policy, { lookup }),
    }));
    stops.push(ferry.close);
    const started = Date.now();
    const flood = await Promise.all(
      Array.from({ length: 12 }, (_, i) => socks5Request(ferry, "connect", addressOf(`n${i}.hang.test`, 80))),
    );
    const honest = await socks5Request(ferry, "connect", addressOf("ok.test", target.port), "127.0.0.2");
    assert.equal(honest.reply.reply, 0, "the other lookup was served");
    honest.socket.destroy();
    for (const f of flood) {
      assert.ok(
        [0x01, 0x06].includes(f.reply.reply),
        `a hung lookup ends with a failure reply, got ${f.reply.reply}`,
      );
      f.socket.destroy();
    }
    assert.ok(Date.now() - started < 10_000, "within timeouts.connect, not forever");
  });
});
