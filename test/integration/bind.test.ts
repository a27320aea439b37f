import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { test } from "node:test";
import { addressOf } from "../../src/protocol/address.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { sha256, waitFor } from "../helpers/net.js";
import { ANY_V4, bytes, socks4Request, socks5Request } from "../helpers/socks-raw.js";

async function connectFrom(host: string, port: number, localAddress?: string): Promise<net.Socket> {
  const s = net.connect({ host, port, allowHalfOpen: true, ...(localAddress && { localAddress }) });
  s.on("error", () => {});
  await once(s, "connect");
  return s;
}

/** Whether a TCP connection to host:port is refused (the BIND listener is gone). */
async function refused(host: string, port: number): Promise<boolean> {
  const s = net.connect({ host, port });
  try {
    await once(s, "connect");
    s.destroy();
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ECONNREFUSED";
  }
}

async function withFerry(config: Parameters<typeof startFerry>[0], fn: (f: RunningFerry) => Promise<void>) {
  const ferry = await startFerry(config);
  try {
    await fn(ferry);
  } finally {
    await ferry.close();
  }
}

for (const family of ["127.0.0.1", "::1"]) {
  test(`SOCKS5 BIND with the client on ${family}: two replies, then data both ways`, async () => {
    const listen = family.includes(":") ? `[${family}]:0` : `${family}:0`;
    await withFerry({ listen: [listen] }, async (ferry) => {
      const c = await socks5Request(ferry, "bind", addressOf(family.includes(":") ? "::" : "0.0.0.0", 0));
      assert.equal(c.reply.reply, 0);
      // The announced address is where the client reached us, never the wildcard.
      assert.equal(c.reply.address.host, family);
      assert.ok(c.reply.address.port > 0);
      const peer = await connectFrom(c.reply.address.host, c.reply.address.port);
      const second = await c.next();
      assert.equal(second.reply, 0);
      assert.equal(second.address.host, family);
      assert.equal(second.address.port, peer.localPort, "the second reply names the peer's port");

      const up = Buffer.alloc(100_000, "u");
      const down = Buffer.alloc(70_000, "d");
      const gotAtPeer: Buffer[] = [];
      peer.on("data", (b: Buffer) => gotAtPeer.push(b));
      c.socket.write(up);
      peer.write(down);
      const atClient = await c.reader.read(bytes(down.length));
      await waitFor(() => Buffer.concat(gotAtPeer).length >= up.length, 10_000, "bytes at the peer");
      assert.equal(sha256(atClient), sha256(down));
      assert.equal(sha256(Buffer.concat(gotAtPeer)), sha256(up));
      const record = ferry.nextRecord();
      c.socket.end();
      peer.end();
      const r = await record;
      assert.equal(r.command, "bind");
      assert.equal(r.peer, `${family.includes(":") ? `[${family}]` : family}:${peer.localPort}`);
      assert.equal(r.bytesUp, up.length);
      assert.equal(r.bytesDown, down.length);
      peer.destroy();
    });
  });
}

test("SOCKS4 BIND: reply 90 with the announced address, then 90 with the peer", async () => {
  await withFerry({}, async (ferry) => {
    const c = await socks4Request(ferry, "bind", addressOf("127.0.0.1", 0));
    assert.equal(c.reply.reply, 90);
    assert.equal(c.reply.host, "127.0.0.1");
    const peer = await connectFrom("127.0.0.1", c.reply.port);
    const second = await c.next();
    assert.deepEqual(second, { reply: 90, host: "127.0.0.1", port: peer.localPort });
    peer.write("from the peer");
    assert.equal((await c.reader.read(bytes(13))).toString(), "from the peer");
    c.socket.destroy();
    peer.destroy();
  });
});

test("BIND refuses a peer from another address than the request named, and keeps waiting", async () => {
  await withFerry({}, async (ferry) => {
    const c = await socks5Request(ferry, "bind", addressOf("127.0.0.2", 0));
    assert.equal(c.reply.reply, 0);
    const port = c.reply.address.port;
    const wrong = await connectFrom("127.0.0.1", port, "127.0.0.1");
    const wrongEnded = await Promise.race([
      new Promise<boolean>((r) => {
        wrong.once("end", () => r(true));
        wrong.once("close", () => r(true));
      }),
      new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
    ]);
    assert.ok(wrongEnded, "the wrong peer is disconnected");
    wrong.destroy();
    const right = await connectFrom("127.0.0.1", port, "127.0.0.2");
    const rightPort = right.localPort;
    const second = await c.next();
    assert.equal(second.reply, 0);
    assert.equal(second.address.host, "127.0.0.2");
    assert.equal(second.address.port, right.localPort);
    right.write("ok");
    assert.equal((await c.reader.read(bytes(2))).toString(), "ok");
    const record = ferry.nextRecord();
    c.socket.destroy();
    right.destroy();
    const r = await record;
    assert.equal(r.peersRefused, 1);
    assert.equal(r.peer, `127.0.0.2:${rightPort}`);
  });
});

test("BIND whose peer never comes gets a failure reply after timeouts.bind, and the listener closes", async () => {
  await withFerry({ timeouts: { bind: "300ms" } }, async (ferry) => {
    const started = Date.now();
    const c = await socks5Request(ferry, "bind", ANY_V4);
    assert.equal(c.reply.reply, 0);
    const second = await c.next();
    const waited = Date.now() - started;
    assert.equal(second.reply, 0x06, "TTL expired is the timeout reply");
    // Well under the 2 min default, with room for a loaded machine.
    assert.ok(waited >= 250 && waited < 8000, `failure after ${waited} ms`);
    assert.ok(await c.closed(), "the server closes the connection");
    assert.ok(await refused("127.0.0.1", c.reply.address.port), "the listener is closed");
    c.socket.destroy();
    const r = ferry.records.at(-1) ?? (await ferry.nextRecord());
    assert.match(r.reason ?? "", /timeouts\.bind/);
  });
});

test("SOCKS4 BIND timeout answers 91", async () => {
  await withFerry({ timeouts: { bind: "200ms" } }, async (ferry) => {
    const c = await socks4Request(ferry, "bind", addressOf("0.0.0.0", 0));
    assert.equal(c.reply.reply, 90);
    assert.equal((await c.next()).reply, 91);
    c.socket.destroy();
  });
});

test("BIND closes its listener when the client goes away", async () => {
  await withFerry({}, async (ferry) => {
    const c = await socks5Request(ferry, "bind", ANY_V4);
    const record = ferry.nextRecord();
    c.socket.end();
    const r = await record;
    assert.match(r.reason ?? "", /closed the connection before a peer connected/);
    assert.ok(await refused("127.0.0.1", c.reply.address.port), "the listener is closed");
    c.socket.destroy();
  });
});

test("BIND takes its port from relayPorts", async () => {
  // Pick a free port and offer exactly it.
  const probe = net.createServer().listen(0, "127.0.0.1");
  await once(probe, "listening");
  const free = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  await withFerry({ relayPorts: `${free}-${free}` }, async (ferry) => {
    const c = await socks5Request(ferry, "bind", ANY_V4);
    assert.equal(c.reply.address.port, free);
    c.socket.destroy();
  });
});
