import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { addressOf } from "../../src/protocol/address.js";
import { parseSocks4Reply } from "../../src/protocol/socks4.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../../src/protocol/udp.js";
import type { SessionRecord } from "../../src/server/context.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startEchoServer } from "../helpers/net.js";
import { assertEchoThrough, recordFor, socks5Connect, TestClient } from "../helpers/socks.js";
import { socks5Request } from "../helpers/socks-raw.js";
import { sendTo, startUdpEcho, udpClient } from "../helpers/udp.js";

/**
 * Security issue #11, finding 1: rules compared the whole name while the resolver stopped at a
 * NUL (or read a number), so `localhost\0anything` passed `deny {to: [localhost]}` and reached
 * 127.0.0.1. Every case here must end without a single connection to the target.
 */

/** Every IPv4 address but 127.0.0.0/8, and all of IPv6: what the proxies here may never reach. */
const NOT_LOOPBACK = [
  "0.0.0.0/2",
  "64.0.0.0/3",
  "96.0.0.0/4",
  "112.0.0.0/5",
  "120.0.0.0/6",
  "124.0.0.0/7",
  "126.0.0.0/8",
  "128.0.0.0/1",
  "::/0",
];

let target: Awaited<ReturnType<typeof startEchoServer>>;
before(async () => {
  target = await startEchoServer("127.0.0.1");
});
after(async () => {
  await target.close();
});

/** A SOCKS5 CONNECT to a DOMAINNAME of exactly these bytes; the reply code and the session record. */
async function socks5ByName(
  ferry: RunningFerry,
  name: Buffer,
): Promise<{ reply: number; record: SessionRecord }> {
  const { client, reply } = await socks5Connect(ferry.port, {
    type: "domain",
    // latin1 keeps every byte as sent (encodeAddress writes UTF-8, equal for ASCII and NUL).
    host: name.toString("latin1"),
    port: target.port,
  });
  // Closed at once: the server waits a while for the client's FIN before it ends the session.
  client.destroy();
  return { reply: reply.reply, record: await recordFor(ferry, client.localPort) };
}

/** A SOCKS4a CONNECT carrying these HOSTNAME bytes; the CD code and the session record. */
async function socks4aByName(
  ferry: RunningFerry,
  name: Buffer,
): Promise<{ reply: number; record: SessionRecord }> {
  const client = await TestClient.connect(ferry.port);
  let reply: number;
  try {
    const port = Buffer.from([target.port >> 8, target.port & 0xff]);
    client.write(
      Buffer.concat([
        Buffer.from([4, 1]),
        port,
        Buffer.from("\0\0\0\x01test\0", "latin1"),
        name,
        Buffer.from([0]),
      ]),
    );
    reply = (await client.read(parseSocks4Reply, 15_000, "the SOCKS4 reply")).reply;
  } finally {
    client.destroy();
  }
  return { reply, record: await recordFor(ferry, client.localPort) };
}

const bytes = (s: string): Buffer => Buffer.from(s, "latin1");

describe("host names are checked before policy, resolver or upstream see them", () => {
  test("deny {to: [localhost]}: NUL bytes, case, trailing dots and numbers never reach 127.0.0.1", async () => {
    const ferry = await startFerry({
      rules: [{ deny: { to: ["localhost"] } }, { allow: { to: ["127.0.0.0/8", "::1"] } }, { deny: {} }],
    });
    const arrivedBefore = target.peers.length;
    try {
      const invalid: [string, RegExp][] = [
        ["localhost\0", /^invalid host name "localhost\\x00": NUL byte at 9$/],
        ["localhost\0anything", /^invalid host name "localhost\\x00anything": NUL byte at 9$/],
        ["localhost\0.example.com", /^invalid host name "localhost\\x00\.example\.com": NUL byte at 9$/],
        ["LOCALHOST\0", /"LOCALHOST\\x00": NUL byte at 9/],
        ["localhost\n", /"localhost\\x0a": byte "\\x0a" at 9 is not allowed/],
        ["localhost..", /"localhost\.\.": empty label at 10/],
        // Numbers getaddrinfo reads as 127.0.0.1 or 0.0.0.0.
        ["2130706433", /"2130706433": a number that is not a dotted-quad/],
        ["127.1", /"127\.1": a number/],
        ["0x7f.1", /"0x7f\.1": a number/],
        ["017700000001", /"017700000001": a number/],
      ];
      for (const [name, reason] of invalid) {
        const r = await socks5ByName(ferry, bytes(name));
        assert.equal(r.reply, 0x04, `SOCKS5 ${JSON.stringify(name)}: host unreachable`);
        assert.match(r.record.reason ?? "", reason);
        assert.equal(r.record.reply, 0x04);
      }
      // Valid spellings of the denied name are normalised first, so the rule sees "localhost".
      for (const name of ["LOCALHOST.", "localhost.", "LocalHost"]) {
        const r = await socks5ByName(ferry, bytes(name));
        assert.equal(r.reply, 0x02, `SOCKS5 ${JSON.stringify(name)}: not allowed by the rule`);
        assert.equal(r.record.target, `localhost:${target.port}`);
        assert.equal(r.record.rule, "rules[0]");
      }
      // SOCKS4a: the NUL ends the name, so the rest is checked the same way.
      for (const [name, reason] of invalid.filter(([n]) => !n.includes("\0"))) {
        const r = await socks4aByName(ferry, bytes(name));
        assert.equal(r.reply, 91, `SOCKS4a ${JSON.stringify(name)}: rejected`);
        assert.match(r.record.reason ?? "", reason);
      }
      for (const name of ["LOCALHOST.", "localhost"]) {
        const r = await socks4aByName(ferry, bytes(name));
        assert.equal(r.reply, 91, `SOCKS4a ${JSON.stringify(name)}: rejected by the rule`);
        assert.equal(r.record.target, `localhost:${target.port}`);
      }
      // The server still serves, and the target saw that connection and no other: every refused
      // request above was answered before this one was sent, so any dial of theirs came first.
      await assertEchoThrough(ferry.port, target.port);
      assert.equal(target.peers.length - arrivedBefore, 1, "only the good request reached the target");
    } finally {
      await ferry.close();
    }
  });

  test('allow {to: ["*.example.com"]}: localhost\\0.example.com does not pass as a name below example.com', async () => {
    const ferry = await startFerry({
      rules: [{ deny: { to: NOT_LOOPBACK } }, { allow: { to: ["*.example.com"] } }, { deny: {} }],
    });
    const arrivedBefore = target.peers.length;
    try {
      const r = await socks5ByName(ferry, bytes("localhost\0.example.com"));
      assert.equal(r.reply, 0x04);
      assert.match(
        r.record.reason ?? "",
        /^invalid host name "localhost\\x00\.example\.com": NUL byte at 9$/,
      );
      const four = await socks4aByName(ferry, bytes("localhost\n.example.com"));
      assert.equal(four.reply, 91);
      assert.match(four.record.reason ?? "", /"localhost\\x0a\.example\.com": byte "\\x0a" at 9/);
      // A literal address is still served by its own rules (here: none allows it, so 0x02).
      const lit = await socks5ByName(ferry, bytes("127.0.0.1"));
      assert.equal(lit.reply, 0x02);
      assert.equal(lit.record.target, `127.0.0.1:${target.port}`);
      assert.equal(target.peers.length - arrivedBefore, 0, "nothing reached the target");
    } finally {
      await ferry.close();
    }
  });

  test("UDP: a datagram to localhost\\0 is dropped as malformed and never sent", async () => {
    const ferry = await startFerry({
      rules: [{ deny: { to: ["localhost"] } }, { allow: { to: ["127.0.0.0/8", "::1"] } }, { deny: {} }],
    });
    const echo = await startUdpEcho("127.0.0.1");
    const client = await udpClient("127.0.0.1");
    try {
      const control = await socks5Request(ferry, "udp", addressOf("0.0.0.0", client.port));
      assert.equal(control.reply.reply, 0);
      const relay = control.reply.address;
      const send = (host: string, data: string) =>
        sendTo(
          client.socket,
          encodeUdpDatagram({
            frag: 0,
            address: { type: "domain", host, port: echo.port },
            data: Buffer.from(data),
          }),
          relay.port,
          relay.host,
        );
      await send("localhost\0", "bad");
      await send("localhost\0anything", "bad");
      await send("2130706433", "bad");
      // The relay handles datagrams in order: once this one is back, the bad ones were handled.
      await send("127.0.0.1", "good");
      const back = await client.next(10_000);
      assert.ok(back, "the good datagram came back");
      assert.equal(parseUdpDatagram(back).data.toString(), "good");
      assert.deepEqual(echo.received.map(String), ["good"], "only the good datagram reached the target");
      const record = ferry.nextRecord();
      control.socket.end();
      assert.equal((await record).datagramsDropped?.malformed, 3);
    } finally {
      client.close();
      await echo.close();
      await ferry.close();
    }
  });

  test("a dotted quad sent as DOMAINNAME is the address, and is served as one", async () => {
    const ferry = await startFerry({ rules: [{ allow: { to: ["127.0.0.1"] } }, { deny: {} }] });
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "domain",
        host: "127.0.0.1",
        port: target.port,
      });
      try {
        assert.equal(reply.reply, 0, "an address rule matches the literal sent as a name");
        client.write("dotted");
        assert.equal((await client.readBytes(6)).toString(), "dotted");
      } finally {
        client.destroy();
      }
    } finally {
      await ferry.close();
    }
  });
});
