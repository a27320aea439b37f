import assert from "node:assert/strict";
import dgram from "node:dgram";
import { once } from "node:events";
import { test } from "node:test";
import { buildOutbound } from "../../src/dial/build-outbound.js";
import type { Policy } from "../../src/policy/policy.js";
import { addressOf, type SocksAddress } from "../../src/protocol/address.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../../src/protocol/udp.js";
import type { ServerContext } from "../../src/server/context.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { waitFor } from "../helpers/net.js";
import { socks5Request } from "../helpers/socks-raw.js";
import { pause, sendTo, startDualUdpEcho, startUdpEcho, udpClient } from "../helpers/udp.js";

type Config = Parameters<typeof startFerry>[0];

async function withFerry(
  config: Config,
  fn: (f: RunningFerry) => Promise<void>,
  tweak?: (ctx: ServerContext) => ServerContext,
): Promise<void> {
  const ferry = await startFerry(config, {}, tweak);
  try {
    await fn(ferry);
  } finally {
    await ferry.close();
  }
}

/** Opens an association for a client UDP socket and returns what is needed to use it. */
async function associate(ferry: RunningFerry, clientHost = "127.0.0.1", announcePort = true) {
  const client = await udpClient(clientHost);
  const any = clientHost.includes(":") ? "::" : "0.0.0.0";
  const control = await socks5Request(ferry, "udp", addressOf(any, announcePort ? client.port : 0));
  assert.equal(control.reply.reply, 0, "association granted");
  const relay = control.reply.address;
  const send = (frag: number, to: SocksAddress, data: Buffer | string) =>
    sendTo(
      client.socket,
      encodeUdpDatagram({ frag, address: to, data: Buffer.from(data) }),
      relay.port,
      relay.host,
    );
  return { client, control, relay, send };
}

const at = (port: number, host = "127.0.0.1") => addressOf(host, port);

for (const family of ["127.0.0.1", "::1"]) {
  test(`UDP ASSOCIATE with the client on ${family} relays to IPv4 and IPv6 destinations and back`, async () => {
    const echo4 = await startUdpEcho("127.0.0.1");
    const echo6 = await startUdpEcho("::1");
    const listen = family.includes(":") ? `[${family}]:0` : `${family}:0`;
    try {
      await withFerry({ listen: [listen] }, async (ferry) => {
        const a = await associate(ferry, family);
        assert.equal(
          a.relay.host,
          family,
          "the relay address is where the client reached us, not a wildcard",
        );
        await a.send(0, at(echo4.port), "to v4");
        const r4 = parseUdpDatagram((await a.client.next())!);
        assert.deepEqual(r4.address, at(echo4.port));
        assert.equal(r4.data.toString(), "to v4");
        await a.send(0, at(echo6.port, "::1"), "to v6");
        const r6 = parseUdpDatagram((await a.client.next())!);
        assert.deepEqual(r6.address, at(echo6.port, "::1"));
        assert.equal(r6.data.toString(), "to v6");
        const record = ferry.nextRecord();
        a.control.socket.end();
        const r = await record;
        assert.equal(r.command, "udp");
        assert.equal(
          r.bound,
          family.includes(":") ? `[${family}]:${a.relay.port}` : `${family}:${a.relay.port}`,
        );
        assert.equal(r.datagramsUp, 2);
        assert.equal(r.datagramsDown, 2);
        assert.equal(r.bytesUp, 10);
        assert.equal(r.bytesDown, 10);
        a.client.close();
      });
    } finally {
      await echo4.close();
      await echo6.close();
    }
  });
}

test("UDP ASSOCIATE resolves named destinations", async () => {
  const echo = await startDualUdpEcho();
  try {
    await withFerry({}, async (ferry) => {
      const a = await associate(ferry);
      for (let i = 0; i < 3; i++) {
        await a.send(0, addressOf("localhost", echo.port), `named ${i}`);
        const reply = parseUdpDatagram((await a.client.next())!);
        assert.equal(reply.data.toString(), `named ${i}`);
        assert.equal(reply.address.port, echo.port);
      }
      a.control.socket.destroy();
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("datagrams from another address or port than the client's are dropped and counted", async () => {
  const echo = await startUdpEcho();
  try {
    await withFerry({}, async (ferry) => {
      const a = await associate(ferry, "127.0.0.1", true);
      // Same IP, another port than the request named.
      const otherPort = await udpClient("127.0.0.1");
      // Another IP altogether.
      const otherIp = await udpClient("127.0.0.2");
      const packet = encodeUdpDatagram({ frag: 0, address: at(echo.port), data: Buffer.from("intruder") });
      await sendTo(otherPort.socket, packet, a.relay.port, a.relay.host);
      await sendTo(otherIp.socket, packet, a.relay.port, a.relay.host);
      await a.send(0, at(echo.port), "client");
      assert.equal(parseUdpDatagram((await a.client.next())!).data.toString(), "client");
      await pause(100);
      assert.deepEqual(
        echo.received.map(String),
        ["client"],
        "only the client's datagram reached the target",
      );
      assert.equal(await otherPort.next(200), undefined);
      const record = ferry.nextRecord();
      a.control.socket.end();
      const r = await record;
      assert.equal(r.datagramsDropped?.["wrong source"], 2);
      otherPort.close();
      otherIp.close();
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("replies from a host the client never sent to are dropped", async () => {
  const echo = await startUdpEcho();
  try {
    await withFerry({}, async (ferry) => {
      const a = await associate(ferry);
      await a.send(0, at(echo.port), "hello");
      await a.client.next();
      // Find the outbound port from the echo's point of view by asking a stranger to write to it.
      const stranger = dgram.createSocket("udp4");
      stranger.unref();
      const seen = await new Promise<dgram.RemoteInfo>((resolve) => {
        const spy = dgram.createSocket("udp4");
        spy.unref();
        spy.bind(0, "127.0.0.1", () => {
          void a.send(0, at(spy.address().port), "who are you").then(() => {});
        });
        spy.on("message", (_m, rinfo) => {
          spy.close();
          resolve(rinfo);
        });
      });
      stranger.send("unsolicited", seen.port, "127.0.0.1");
      assert.equal(await a.client.next(300), undefined, "nothing unsolicited reaches the client");
      stranger.close();
      const record = ferry.nextRecord();
      a.control.socket.end();
      assert.equal((await record).datagramsDropped?.["unknown sender"], 1);
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("fragments 1, 2, 0x83 are reassembled and delivered as one datagram", async () => {
  const echo = await startUdpEcho();
  try {
    await withFerry({}, async (ferry) => {
      const a = await associate(ferry);
      await a.send(1, at(echo.port), "first-");
      await a.send(2, at(echo.port), "second-");
      await a.send(0x83, at(echo.port), "third");
      const reply = parseUdpDatagram((await a.client.next())!);
      assert.equal(reply.frag, 0);
      assert.equal(reply.data.toString(), "first-second-third");
      assert.deepEqual(echo.received.map(String), ["first-second-third"]);
      a.control.socket.destroy();
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("a fragment lower than the highest seen abandons the reassembly queue", async () => {
  const echo = await startUdpEcho();
  try {
    await withFerry({}, async (ferry) => {
      const a = await associate(ferry);
      await a.send(1, at(echo.port), "a");
      await a.send(2, at(echo.port), "b");
      await a.send(3, at(echo.port), "c");
      await a.send(0x82, at(echo.port), "X"); // lower than 3: the queue is abandoned
      await a.send(0x84, at(echo.port), "d"); // had the queue survived, this would complete "abcd"
      await a.send(0, at(echo.port), "standalone");
      assert.equal(parseUdpDatagram((await a.client.next())!).data.toString(), "standalone");
      await pause(100);
      assert.deepEqual(echo.received.map(String), ["standalone"]);
      const record = ferry.nextRecord();
      a.control.socket.end();
      const r = await record;
      assert.equal(r.datagramsDropped?.["fragment out of order"], 4, "a, b, c and the lower fragment");
      assert.equal(r.datagramsDropped?.["fragment missing fragment"], 1, "0x84 with no sequence");
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("a lone fragment is dropped when the reassembly timer (5 s) fires", async () => {
  const echo = await startUdpEcho();
  try {
    await withFerry({ timeouts: { fragment: "5s" } }, async (ferry) => {
      const a = await associate(ferry);
      await a.send(1, at(echo.port), "lone ");
      // The server's 5 s timer starts when it reads the fragment, which a loaded machine may do
      // a moment after our send completed: wait well past it.
      await pause(7000);
      await a.send(0x82, at(echo.port), "late"); // would complete "lone late" if the queue had survived
      await a.send(0, at(echo.port), "after");
      assert.equal(parseUdpDatagram((await a.client.next())!).data.toString(), "after");
      await pause(100);
      assert.deepEqual(echo.received.map(String), ["after"]);
      const record = ferry.nextRecord();
      a.control.socket.end();
      assert.equal((await record).datagramsDropped?.["fragment timeout"], 1);
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("fragments beyond the size bound are dropped: one association cannot hoard memory", async () => {
  const echo = await startUdpEcho();
  try {
    await withFerry({}, async (ferry) => {
      const a = await associate(ferry);
      const chunk = Buffer.alloc(30_000, "x");
      // 3 x 30 000 bytes exceeds the 65 507-byte bound: the third fragment abandons the queue.
      await a.send(1, at(echo.port), chunk);
      await a.send(2, at(echo.port), chunk);
      await a.send(3, at(echo.port), chunk);
      await a.send(0x84, at(echo.port), "end");
      await a.send(0, at(echo.port), "small");
      assert.equal(parseUdpDatagram((await a.client.next())!).data.toString(), "small");
      await pause(100);
      assert.deepEqual(echo.received.map(String), ["small"]);
      const record = ferry.nextRecord();
      a.control.socket.end();
      const r = await record;
      assert.equal(r.datagramsDropped?.["fragment too large"], 3);
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("closing the control connection ends the association and frees its socket", async () => {
  const echo = await startUdpEcho();
  try {
    await withFerry({}, async (ferry) => {
      const a = await associate(ferry);
      await a.send(0, at(echo.port), "before");
      assert.ok(await a.client.next());
      const record = ferry.nextRecord();
      a.control.socket.end();
      await record;
      assert.ok(await a.control.closed(), "the server closes its side too");
      await a.send(0, at(echo.port), "after");
      await pause(200);
      assert.deepEqual(echo.received.map(String), ["before"], "nothing is relayed after the end");
      // The relay port is free again: we can bind it ourselves.
      const probe = dgram.createSocket("udp4");
      probe.bind(a.relay.port, a.relay.host);
      await once(probe, "listening");
      probe.close();
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});

test("`::` over an IPv4 control connection opens the relay on ::1; the first datagram pins the client's port", async () => {
  const echo = await startUdpEcho("::1");
  try {
    await withFerry({}, async (ferry) => {
      const client = await udpClient("::1");
      const other = await udpClient("::1");
      const control = await socks5Request(ferry, "udp", addressOf("::", 0));
      assert.equal(control.reply.reply, 0);
      const relay = control.reply.address;
      assert.deepEqual(relay.host, "::1", "the counterpart of 127.0.0.1 in the family the client declared");
      const packet = (text: string) =>
        encodeUdpDatagram({ frag: 0, address: at(echo.port, "::1"), data: Buffer.from(text) });
      await sendTo(client.socket, packet("first"), relay.port, relay.host);
      assert.equal(parseUdpDatagram((await client.next())!).data.toString(), "first");
      await sendTo(other.socket, packet("second port"), relay.port, relay.host);
      assert.equal(await other.next(300), undefined);
      assert.deepEqual(echo.received.map(String), ["first"]);
      const record = ferry.nextRecord();
      control.socket.end();
      const r = await record;
      assert.equal(r.datagramsDropped?.["wrong source"], 1);
      client.close();
      other.close();
    });
  } finally {
    await echo.close();
  }
});

test("an idle association is ended after timeouts.idle", async () => {
  await withFerry({ timeouts: { idle: "300ms" } }, async (ferry) => {
    const a = await associate(ferry);
    const record = ferry.nextRecord();
    assert.ok(await a.control.closed(), "the server closes the control connection");
    assert.match((await record).reason ?? "", /idle/);
    a.client.close();
  });
});

test("associations per client are bounded", async () => {
  await withFerry({ limits: { associationsPerClient: 1 } }, async (ferry) => {
    const first = await associate(ferry);
    const second = await socks5Request(ferry, "udp", addressOf("0.0.0.0", 0));
    assert.equal(second.reply.reply, 0x01);
    second.socket.destroy();
    const record = ferry.nextRecord();
    first.control.socket.destroy();
    await record;
    const third = await socks5Request(ferry, "udp", addressOf("0.0.0.0", 0));
    assert.equal(third.reply.reply, 0, "the slot is free again once the first association ends");
    third.socket.destroy();
    first.client.close();
  });
});

test("policy is asked for every destination: a denied one is dropped, others relayed", async () => {
  const allowed = await startUdpEcho();
  const denied = await startUdpEcho();
  try {
    await withFerry(
      {},
      async (ferry) => {
        const a = await associate(ferry);
        await a.send(0, at(denied.port), "no");
        await a.send(0, at(allowed.port), "yes");
        assert.equal(parseUdpDatagram((await a.client.next())!).data.toString(), "yes");
        await pause(100);
        assert.equal(denied.received.length, 0);
        const record = ferry.nextRecord();
        a.control.socket.end();
        assert.equal((await record).datagramsDropped?.denied, 1);
        a.client.close();
      },
      (ctx) => {
        const policy: Policy = {
          ...ctx.policy,
          destination: (q, ip) =>
            q.target.port === denied.port
              ? { verdict: "deny", rule: "test", reason: `port ${denied.port} denied (${ip})` }
              : ctx.policy.destination(q, ip),
        };
        return { ...ctx, policy, outbound: buildOutbound(ctx.config, policy) };
      },
    );
  } finally {
    await allowed.close();
    await denied.close();
  }
});

test("the datagram queue is bounded", async () => {
  const echo = await startDualUdpEcho();
  try {
    await withFerry({ limits: { udpQueue: 1 } }, async (ferry) => {
      const a = await associate(ferry);
      // Names wait for a lookup: with a queue of one, a burst to a name loses all but one. The five
      // leave together (not one per send callback), so a slow machine cannot let the lookup of
      // one finish before the next arrives.
      await Promise.all(
        [0, 1, 2, 3, 4].map((i) => a.send(0, addressOf("localhost", echo.port), `burst ${i}`)),
      );
      await waitFor(() => echo.received.length >= 1, 10_000, "one datagram relayed");
      await pause(100);
      const record = ferry.nextRecord();
      a.control.socket.end();
      const r = await record;
      assert.ok((r.datagramsDropped?.["queue full"] ?? 0) >= 1, JSON.stringify(r.datagramsDropped));
      assert.equal((r.datagramsUp ?? 0) + (r.datagramsDropped?.["queue full"] ?? 0), 5);
      a.client.close();
    });
  } finally {
    await echo.close();
  }
});
