import assert from "node:assert/strict";
import dgram from "node:dgram";
import { once } from "node:events";
import type { Duplex } from "node:stream";
import { test } from "node:test";
import { loadGssapi } from "../../src/auth/gssapi-native.js";
import {
  type GssEncapsulation,
  gssProtector,
  unwrapDatagram,
  wrapDatagram,
} from "../../src/auth/gssapi-stream.js";
import { associate as socksAssociate } from "../../src/client/associate.js";
import { connect as socksConnect } from "../../src/client/connect.js";
import { SocksError } from "../../src/client/errors.js";
import { GssapiClientError } from "../../src/client/gssapi.js";
import { describeHop, parseProxyUrl } from "../../src/client/proxy.js";
import { ConfigError, loadConfig } from "../../src/config/load.js";
import { addressOf } from "../../src/protocol/address.js";
import type { ProtectionName } from "../../src/protocol/gssapi.js";
import { encodeUdpHeader, parseUdpDatagram } from "../../src/protocol/udp.js";
import { buildContext } from "../../src/server/build-context.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { gssapiConnect } from "../helpers/gssapi-client.js";
import { requireKerberos, startTestRealm, type TestRealm } from "../helpers/kdc.js";
import { sha256, startEchoServer } from "../helpers/net.js";
import { startTap } from "../helpers/tap.js";

/** Writes `data`, half-closes, and collects what comes back until the peer ends (bounded). */
async function roundTrip(stream: Duplex, data: Buffer, timeoutMs = 30_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  const ended = once(stream, "end");
  stream.resume();
  stream.end(data);
  const timer = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`no end within ${timeoutMs} ms`)), timeoutMs).unref(),
  );
  await Promise.race([ended, timer]);
  return Buffer.concat(chunks);
}

function gssapiFerry(realm: TestRealm, protection: ProtectionName[]): Promise<RunningFerry> {
  return startFerry({
    auth: ["gssapi"],
    gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection },
  });
}

/** A payload bigger than one wrap (64 KiB) with a marker that is easy to find on the wire. */
const MARKER = "FERRY-PLAINTEXT-MARKER-0123456789";
const payload = Buffer.from(`${MARKER}\n`.repeat(6000));

test("GSSAPI (RFC 1961) against a real Kerberos realm", async (t) => {
  if (!requireKerberos(t)) return;
  const realm = await startTestRealm();
  const echo = await startEchoServer();
  t.after(async () => {
    await echo.close();
    await realm.stop();
  });

  for (const level of ["none", "integrity", "confidentiality"] as const) {
    await t.test(
      `Ferry client and server at protection "${level}": data intact, wire as expected`,
      async () => {
        const ferry = await gssapiFerry(realm, [level]);
        const tap = await startTap(ferry.port);
        try {
          const record = ferry.nextRecord();
          const conn = await gssapiConnect(
            tap.port,
            { host: "127.0.0.1", port: echo.port },
            { service: "rcmd@localhost", protection: [level] },
          );
          assert.equal(conn.reply, 0);
          assert.equal(conn.protection, level);
          const back = await roundTrip(conn.stream, payload);
          assert.equal(sha256(back), sha256(payload), "the echo came back byte for byte");
          const r = await record;
          assert.equal(r.user, `${realm.user}@${realm.realm}`);
          assert.equal(r.protection, level, "the record says which protection was agreed");
          assert.equal(r.bytesUp, payload.length);
          const up = tap.up();
          const down = tap.down();
          if (level === "confidentiality") {
            assert.equal(up.includes(MARKER), false, "confidentiality: no plaintext client → server");
            assert.equal(down.includes(MARKER), false, "confidentiality: no plaintext server → client");
          } else {
            assert.equal(up.includes(MARKER), true, `${level}: the payload is readable on the wire`);
            assert.equal(down.includes(MARKER), true);
          }
          if (level === "none") {
            // Unprotected: the payload follows the reply as is (only the handshake is Kerberos).
            assert.equal(up.subarray(up.length - payload.length).equals(payload), true);
          } else {
            // Protected: more bytes than the payload (tokens and RFC 1961 framing), in 64 KiB chunks.
            assert.ok(up.length > payload.length + 4 * Math.ceil(payload.length / 65_535));
          }
        } finally {
          await tap.close();
          await ferry.close();
        }
      },
    );
  }

  await t.test("failures are clean and the server keeps serving", async (t) => {
    const ferry = await gssapiFerry(realm, ["confidentiality", "integrity"]);
    const target = { host: "127.0.0.1", port: echo.port };
    try {
      await t.test("no ticket", async () => {
        const record = ferry.nextRecord();
        await assert.rejects(
          gssapiConnect(ferry.port, target, { service: "rcmd@localhost", ccache: realm.emptyCcache }),
          (err: Error) =>
            err instanceof GssapiClientError &&
            /No credentials cache found.*run kinit first/.test(err.message),
        );
        assert.match((await record).reason ?? "", /aborted/);
      });

      await t.test("a service the KDC does not know", async () => {
        const record = ferry.nextRecord();
        await assert.rejects(
          gssapiConnect(ferry.port, target, { service: "nosuch@localhost" }),
          /nosuch\/localhost@FERRY.TEST not found in Kerberos database; check the proxy's service name/,
        );
        assert.match((await record).reason ?? "", /aborted/);
      });

      await t.test("a service that is not this proxy's", async () => {
        const record = ferry.nextRecord();
        await assert.rejects(
          gssapiConnect(ferry.port, target, { service: realm.otherService }),
          /the proxy refused authentication for host\/localhost/,
        );
        assert.match(
          (await record).reason ?? "",
          /GSSAPI: gss_accept_sec_context: .*host\/localhost@FERRY.TEST not found in keytab/,
        );
      });

      await t.test("a corrupted token", async () => {
        // Greeting (3 bytes), RFC 1961 header (4), then flip a byte inside the Kerberos AP-REQ.
        const tap = await startTap(ferry.port, { corruptAt: 3 + 4 + 300 });
        try {
          const record = ferry.nextRecord();
          await assert.rejects(
            gssapiConnect(tap.port, target, { service: "rcmd@localhost" }),
            /the proxy refused authentication/,
          );
          assert.match((await record).reason ?? "", /^GSSAPI: gss_accept_sec_context: /);
        } finally {
          await tap.close();
        }
      });

      await t.test(
        "a client that asks for no protection gets the server's choice, and refuses it",
        async () => {
          await assert.rejects(
            gssapiConnect(ferry.port, target, { service: "rcmd@localhost", protection: ["none"] }),
            /the proxy wants protection "confidentiality", which this client does not accept \(asked for "none", accepting none; choose with \?protection=/,
          );
        },
      );

      await t.test("after all that, a good client still gets through", async () => {
        const conn = await gssapiConnect(ferry.port, target, { service: "rcmd/localhost" });
        assert.equal(conn.protection, "confidentiality");
        const data = Buffer.from("still serving");
        assert.deepEqual(await roundTrip(conn.stream, data), data);
      });
    } finally {
      await ferry.close();
    }
  });

  await t.test("a tampered data token after the handshake ends that session only", async () => {
    const ferry = await gssapiFerry(realm, ["integrity"]);
    try {
      const conn = await gssapiConnect(
        ferry.port,
        { host: "127.0.0.1", port: echo.port },
        { service: "rcmd@localhost", protection: ["integrity"] },
      );
      const record = ferry.nextRecord();
      // A well-framed data message whose token is garbage: the server must not relay it.
      conn.socket.write(Buffer.from([0x01, 0x03, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]));
      const r = await record;
      assert.match(r.reason ?? "", /GSSAPI: gss_unwrap/);
      assert.equal(r.bytesUp, 0);
    } finally {
      await ferry.close();
    }
  });

  await t.test("datagrams: wrapped whole, reordering tolerated, replays and tampering refused", async () => {
    const api = loadGssapi();
    const client = new api.Context("rcmd@localhost");
    const server = new api.Context(new api.Credential(realm.keytab, "rcmd/localhost"));
    await client.step(await server.step(await client.step()));
    assert.ok(client.complete && server.complete);
    const send = gssProtector(client, "confidentiality");
    const recv = gssProtector(server, "confidentiality");
    const datagrams = [0, 1, 2].map((i) => Buffer.from(`datagram ${i} ${MARKER}`));
    const packets = datagrams.map((d) => wrapDatagram(send, d));
    for (const p of packets) {
      assert.deepEqual(p.subarray(0, 2), Buffer.from([0x01, 0x03]));
      assert.equal(p.includes(MARKER), false);
    }
    // Out of order is fine for datagrams (loss and reordering are UDP's nature)…
    assert.deepEqual(unwrapDatagram(recv, packets[2]!), datagrams[2]);
    assert.deepEqual(unwrapDatagram(recv, packets[0]!), datagrams[0]);
    // …a replay is not, nor a changed byte, nor a packet that is not one whole message.
    assert.throws(() => unwrapDatagram(recv, packets[0]!), /gss_unwrap/);
    const bad = Buffer.from(packets[1]!);
    bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 1;
    assert.throws(() => unwrapDatagram(recv, bad), /gss_unwrap/);
    assert.throws(() => unwrapDatagram(recv, packets[1]!.subarray(0, 10)), /not one whole/);
    assert.deepEqual(unwrapDatagram(recv, packets[1]!), datagrams[1]);
    assert.throws(() => wrapDatagram(send, Buffer.alloc(send.maxChunk + 1)), /exceeds the GSSAPI limit/);
    send.dispose();
    recv.dispose();
  });

  await t.test("the client library: connect() through socks5h://host:port?gssapi=SERVICE", async () => {
    const ferry = await gssapiFerry(realm, ["confidentiality", "integrity"]);
    try {
      const hop = parseProxyUrl(`socks5h://127.0.0.1:${ferry.port}?gssapi=rcmd%2Flocalhost`);
      assert.deepEqual(hop.gssapi, { service: "rcmd/localhost" });
      assert.equal(describeHop(hop), `socks5h://127.0.0.1:${ferry.port}?gssapi=rcmd%2Flocalhost`);
      assert.deepEqual(parseProxyUrl("socks5h://proxy.example.com?gssapi").gssapi, { service: "rcmd" });
      const record = ferry.nextRecord();
      const socket = await socksConnect(hop, `127.0.0.1:${echo.port}`);
      assert.equal(sha256(await roundTrip(socket, payload)), sha256(payload));
      assert.equal((await record).user, `${realm.user}@${realm.realm}`);
      // The object form, with a level this proxy will not pick: the client hangs up, clearly.
      await assert.rejects(
        socksConnect(
          {
            ...parseProxyUrl(`socks5h://127.0.0.1:${ferry.port}`),
            gssapi: { service: "rcmd@localhost", protection: ["none"] },
          },
          `127.0.0.1:${echo.port}`,
        ),
        (err: Error) => err instanceof SocksError && /wants protection "confidentiality"/.test(err.message),
      );
    } finally {
      await ferry.close();
    }
  });

  await t.test(
    "UDP ASSOCIATE under integrity: every datagram wrapped both ways, plain ones dropped",
    async () => {
      const ferry = await gssapiFerry(realm, ["integrity"]);
      const udpEcho = dgram.createSocket("udp4");
      udpEcho.on("message", (m, r) => udpEcho.send(m, r.port, r.address));
      udpEcho.bind(0, "127.0.0.1");
      await once(udpEcho, "listening");
      const client = dgram.createSocket("udp4");
      client.bind(0, "127.0.0.1");
      await once(client, "listening");
      try {
        const conn = await gssapiConnect(
          ferry.port,
          { host: "127.0.0.1", port: client.address().port },
          { service: "rcmd@localhost", protection: ["integrity"] },
          "udp",
        );
        assert.equal(conn.reply, 0);
        const protector = (conn.stream as GssEncapsulation).protector;
        const echoAddr = addressOf("127.0.0.1", udpEcho.address().port);
        const data = Buffer.from(`udp ${MARKER}`);
        const reply = once(client, "message");
        // A plain datagram first: the relay must drop it, not forward it.
        client.send(
          Buffer.concat([encodeUdpHeader(echoAddr), Buffer.from("plain")]),
          conn.bound.port,
          "127.0.0.1",
        );
        client.send(
          wrapDatagram(protector, Buffer.concat([encodeUdpHeader(echoAddr), data])),
          conn.bound.port,
          "127.0.0.1",
        );
        const [packet] = (await reply) as [Buffer];
        assert.deepEqual(
          packet.subarray(0, 2),
          Buffer.from([0x01, 0x03]),
          "the reply is an RFC 1961 data message",
        );
        const inner = parseUdpDatagram(unwrapDatagram(protector, packet));
        assert.deepEqual(inner.data, data);
        assert.equal(inner.address.port, udpEcho.address().port);
        const record = ferry.nextRecord();
        conn.stream.destroy();
        const r = await record;
        assert.equal(r.datagramsUp, 1);
        assert.equal(r.datagramsDown, 1);
        assert.equal(r.datagramsDropped?.["GSSAPI check failed"], 1);
      } finally {
        client.close();
        udpEcho.close();
        await ferry.close();
      }
    },
  );

  await t.test("the client library's associate() through a GSSAPI hop wraps its datagrams", async () => {
    const ferry = await gssapiFerry(realm, ["confidentiality"]);
    const udpEcho = dgram.createSocket("udp4");
    udpEcho.on("message", (m, r) => udpEcho.send(m, r.port, r.address));
    udpEcho.bind(0, "127.0.0.1");
    await once(udpEcho, "listening");
    try {
      const assoc = await socksAssociate(`socks5h://127.0.0.1:${ferry.port}?gssapi=rcmd%2Flocalhost`);
      const got = once(assoc, "message");
      await assoc.send(`ping ${MARKER}`, `127.0.0.1:${udpEcho.address().port}`);
      const [data] = (await got) as [Buffer];
      assert.equal(data.toString(), `ping ${MARKER}`);
      const record = ferry.nextRecord();
      assoc.close();
      const r = await record;
      assert.equal(r.user, `${realm.user}@${realm.realm}`);
      assert.equal(r.datagramsUp, 1);
      assert.equal(r.datagramsDown, 1);
    } finally {
      udpEcho.close();
      await ferry.close();
    }
  });

  await t.test("configuration errors are one clear line", async () => {
    const config = await loadConfig({
      overrides: {
        listen: ["127.0.0.1:0"],
        auth: ["gssapi"],
        gssapi: { keytab: `${realm.dir}/missing.keytab` },
      },
    });
    await assert.rejects(buildContext(config), (err: Error) => {
      return (
        err instanceof ConfigError &&
        /missing\.keytab cannot be read \(ENOENT\); export the service key/.test(err.message)
      );
    });
    await assert.rejects(
      loadConfig({ overrides: { listen: ["127.0.0.1:0"], auth: ["gssapi"] } }),
      /auth: gssapi is offered but not configured; add gssapi: \{ keytab: FILE/,
    );
  });
});
