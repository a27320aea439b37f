import assert from "node:assert/strict";
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";
import { after, describe, test } from "node:test";
import { buildOutbound } from "../../src/dial/build-outbound.js";
import type { Resolved } from "../../src/dial/family.js";
import { addressOf, encodeAddress, parseAddress, type SocksAddress } from "../../src/protocol/address.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../../src/protocol/udp.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { rawExchange } from "../helpers/net.js";
import { ANY_V4, bytes, socks5Request } from "../helpers/socks-raw.js";
import { sendTo, udpClient } from "../helpers/udp.js";

/** A server that tells each client the address it sees it from, tagged, then closes. */
async function startWhoServer(
  host: string,
  tag: string,
  port = 0,
): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((s) => {
    s.on("error", () => {});
    s.end(`${tag} ${s.remoteAddress}`);
  });
  server.listen(port, host);
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

interface Connected {
  reply: number;
  bound?: SocksAddress;
  /** What the target said after the reply. */
  said: string;
}

/** SOCKS5 no-auth CONNECT in one write; the reply and whatever followed it. */
async function socks5Connect(ferry: RunningFerry, target: SocksAddress): Promise<Connected> {
  const request = Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0]), encodeAddress(target)]);
  const { data } = await rawExchange(ferry.port, request, { host: ferry.host });
  assert.deepEqual([...data.subarray(0, 2)], [5, 0], "method reply: no authentication");
  assert.equal(data[2], 5, "a SOCKS5 reply");
  const parsed = parseAddress(data, 5);
  assert.ok(parsed, `a complete reply, got ${data.toString("hex")}`);
  return { reply: data[3]!, bound: parsed.address, said: data.subarray(parsed.next).toString() };
}

const closers: (() => unknown)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

describe("egress: external addresses", () => {
  test("outbound connections leave from the external address: the target sees 127.0.0.2, BND says so", async () => {
    const who = await startWhoServer("127.0.0.1", "v4");
    closers.push(who.close);
    const plain = await startFerry();
    closers.push(plain.close);
    const before = await socks5Connect(plain, addressOf("127.0.0.1", who.port));
    assert.equal(before.said, "v4 127.0.0.1", "without external the kernel picks 127.0.0.1");

    const ferry = await startFerry({ external: ["127.0.0.2", "::1"] });
    closers.push(ferry.close);
    const r = await socks5Connect(ferry, addressOf("127.0.0.1", who.port));
    assert.equal(r.reply, 0);
    assert.equal(r.said, "v4 127.0.0.2");
    assert.equal(r.bound?.host, "127.0.0.2", "the reply announces the egress address");
    const record = ferry.records.at(-1) ?? (await ferry.nextRecord());
    assert.match(record.bound ?? "", /^127\.0\.0\.2:\d+$/);
  });

  test("each family binds its own external address; a family without one is left to the kernel", async () => {
    const who6 = await startWhoServer("::1", "v6");
    const who4 = await startWhoServer("127.0.0.1", "v4");
    closers.push(who6.close, who4.close);
    const ferry = await startFerry({ external: "127.0.0.3" });
    closers.push(ferry.close);
    assert.equal((await socks5Connect(ferry, addressOf("::1", who6.port))).said, "v6 ::1");
    assert.equal((await socks5Connect(ferry, addressOf("127.0.0.1", who4.port))).said, "v4 127.0.0.3");
  });

  test("an external address this host does not have (a NAT's public address) is announced, not bound", async () => {
    const who = await startWhoServer("127.0.0.1", "v4");
    closers.push(who.close);
    const ferry = await startFerry({ external: "192.0.2.99" });
    closers.push(ferry.close);
    const r = await socks5Connect(ferry, addressOf("127.0.0.1", who.port));
    assert.equal(r.reply, 0);
    assert.equal(r.said, "v4 127.0.0.1", "outbound is left to the kernel");
    const bind = await socks5Request(ferry, "bind", ANY_V4);
    closers.push(() => bind.socket.destroy());
    assert.equal(bind.reply.reply, 0);
    assert.equal(bind.reply.address.host, "192.0.2.99", "BIND announces the public address");
  });

  test("a bind failure on the external address (gone while running) says so in the log", async () => {
    const who = await startWhoServer("127.0.0.1", "v4");
    closers.push(who.close);
    // Handed straight to the dialer, past the load-time check that would leave it unbound.
    const ferry = await startFerry({}, {}, (ctx) => ({
      ...ctx,
      outbound: buildOutbound(ctx.config, ctx.policy, { external: { ipv4: "192.0.2.99" } }),
    }));
    closers.push(ferry.close);
    const recordP = ferry.nextRecord();
    const r = await socks5Connect(ferry, addressOf("127.0.0.1", who.port));
    assert.equal(r.reply, 0x01);
    assert.match(
      (await recordP).reason ?? "",
      /cannot bind to the external address 192\.0\.2\.99: EADDRNOTAVAIL/,
    );
  });

  test("BIND listens on the external address and announces it; the peer reaches it there", async () => {
    const ferry = await startFerry({ external: "127.0.0.2" });
    closers.push(ferry.close);
    const bind = await socks5Request(ferry, "bind", ANY_V4);
    closers.push(() => bind.socket.destroy());
    assert.equal(bind.reply.reply, 0);
    assert.equal(bind.reply.address.host, "127.0.0.2");
    // Only 127.0.0.2 listens: the same port on 127.0.0.1 refuses.
    const wrong = net.connect({ host: "127.0.0.1", port: bind.reply.address.port });
    const [err] = (await once(wrong, "error")) as [NodeJS.ErrnoException];
    assert.equal(err.code, "ECONNREFUSED");
    const peer = net.connect({ host: "127.0.0.2", port: bind.reply.address.port, localAddress: "127.0.0.1" });
    closers.push(() => peer.destroy());
    await once(peer, "connect");
    const second = await bind.next();
    assert.deepEqual(
      [second.reply, second.address.host, second.address.port],
      [0, "127.0.0.1", peer.localPort],
    );
    peer.write("via 127.0.0.2");
    assert.equal((await bind.reader.read(bytes(13))).toString(), "via 127.0.0.2");
  });

  test("UDP: the relay opens on the external address and datagrams leave from it", async () => {
    const target = dgram.createSocket("udp4");
    target.on("message", (msg, rinfo) =>
      target.send(`${msg} from ${rinfo.address}`, rinfo.port, rinfo.address),
    );
    target.bind(0, "127.0.0.1");
    await once(target, "listening");
    closers.push(() => target.close());
    const client = await udpClient();
    closers.push(client.close);
    const ferry = await startFerry({ external: "127.0.0.2" });
    closers.push(ferry.close);
    const assoc = await socks5Request(ferry, "udp", addressOf("127.0.0.1", client.port));
    closers.push(() => assoc.socket.destroy());
    assert.equal(assoc.reply.reply, 0);
    assert.equal(assoc.reply.address.host, "127.0.0.2", "the relay is announced on the external address");
    const to = addressOf("127.0.0.1", target.address().port);
    await sendTo(
      client.socket,
      encodeUdpDatagram({ frag: 0, address: to, data: Buffer.from("ping") }),
      assoc.reply.address.port,
      "127.0.0.2",
    );
    const answer = await client.next();
    assert.ok(answer, "an answer through the relay");
    assert.equal(parseUdpDatagram(answer).data.toString(), "ping from 127.0.0.2");
  });
});

describe("IPv4/IPv6 gateway", () => {
  test("a client on IPv4 reaches an IPv6-only target by literal, and an IPv6 client an IPv4-only one", async () => {
    const who6 = await startWhoServer("::1", "v6");
    const who4 = await startWhoServer("127.0.0.1", "v4");
    closers.push(who6.close, who4.close);
    const on4 = await startFerry();
    const on6 = await startFerry({ listen: ["[::1]:0"] });
    closers.push(on4.close, on6.close);
    assert.equal(on4.host, "127.0.0.1");
    assert.equal(on6.host, "::1");
    const a = await socks5Connect(on4, addressOf("::1", who6.port));
    assert.deepEqual([a.reply, a.said, a.bound?.type], [0, "v6 ::1", "ipv6"]);
    const b = await socks5Connect(on6, addressOf("127.0.0.1", who4.port));
    assert.deepEqual([b.reply, b.said, b.bound?.type], [0, "v4 127.0.0.1", "ipv4"]);
    // SOCKS4 clients can only name IPv4 addresses, but 4a names reach IPv6 through the gateway.
    const v4a = Buffer.concat([
      Buffer.from([4, 1]),
      Buffer.from([who6.port >> 8, who6.port & 0xff]),
      Buffer.from([0, 0, 0, 1]),
      Buffer.from("u\0six.test\0"),
    ]);
    const lookup = async (host: string): Promise<Resolved[]> =>
      host === "six.test" ? [{ address: "::1", family: 6 }] : [];
    const named = await startFerry({}, {}, (ctx) => ({
      ...ctx,
      outbound: buildOutbound(ctx.config, ctx.policy, { lookup }),
    }));
    closers.push(named.close);
    const { data } = await rawExchange(named.port, v4a);
    assert.equal(data[1], 90, "SOCKS4a granted");
    assert.equal(data.subarray(8).toString(), "v6 ::1");
  });

  test("resolve picks the family of a dual-stack name; *-only refuses what it cannot reach", async () => {
    // One port on both loopbacks, each answering with its family.
    let who6: Awaited<ReturnType<typeof startWhoServer>> | undefined;
    let who4: Awaited<ReturnType<typeof startWhoServer>> | undefined;
    for (let i = 0; i < 20 && !who4; i++) {
      who6?.close();
      who6 = await startWhoServer("::1", "v6");
      who4 = await startWhoServer("127.0.0.1", "v4", who6.port).catch(() => undefined);
    }
    assert.ok(who4 && who6, "a port free on both 127.0.0.1 and ::1");
    closers.push(who6.close, who4.close);
    const port = who6.port;
    const lookup = async (host: string): Promise<Resolved[]> => {
      if (host === "dual.test")
        return [
          { address: "127.0.0.1", family: 4 },
          { address: "::1", family: 6 },
        ];
      if (host === "six.test") return [{ address: "::1", family: 6 }];
      throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
    };
    const said: Record<string, string> = {};
    for (const resolve of ["system", "ipv4-first", "ipv6-first", "ipv4-only", "ipv6-only"] as const) {
      const ferry = await startFerry({}, {}, (ctx) => ({
        ...ctx,
        outbound: buildOutbound(ctx.config, ctx.policy, { lookup, resolve }),
      }));
      closers.push(ferry.close);
      const r = await socks5Connect(ferry, addressOf("dual.test", port));
      assert.equal(r.reply, 0, resolve);
      said[resolve] = r.said;
    }
    assert.deepEqual(said, {
      system: "v4 127.0.0.1",
      "ipv4-first": "v4 127.0.0.1",
      "ipv6-first": "v6 ::1",
      "ipv4-only": "v4 127.0.0.1",
      "ipv6-only": "v6 ::1",
    });
    // A rule's resolve wins over the dialer's default.
    const perRule = await startFerry(
      { rules: [{ allow: { ports: [port], resolve: "ipv6-only" } }] },
      {},
      (ctx) => ({
        ...ctx,
        outbound: buildOutbound(ctx.config, ctx.policy, { lookup, resolve: "ipv4-only" }),
      }),
    );
    closers.push(perRule.close);
    assert.equal((await socks5Connect(perRule, addressOf("dual.test", port))).said, "v6 ::1");
    // The config key reaches the dialer the server builds.
    const fromConfig = await startFerry({ resolve: "ipv4-only" });
    closers.push(fromConfig.close);
    const recordP = fromConfig.nextRecord();
    const lit = await socks5Connect(fromConfig, addressOf("::1", port));
    assert.equal(lit.reply, 0x08, "an IPv6 literal on an ipv4-only route: address type not supported");
    assert.match(
      (await recordP).reason ?? "",
      /::1 is not an IPv4 address and this route is resolve: ipv4-only/,
    );

    const only4 = await startFerry({}, {}, (ctx) => ({
      ...ctx,
      outbound: buildOutbound(ctx.config, ctx.policy, { lookup, resolve: "ipv4-only" }),
    }));
    closers.push(only4.close);
    const named = await socks5Connect(only4, addressOf("six.test", port));
    assert.equal(
      named.reply,
      0x04,
      "a name with only IPv6 addresses on an ipv4-only route: host unreachable",
    );
  });
});
