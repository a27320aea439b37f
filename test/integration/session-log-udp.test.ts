import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { Writable } from "node:stream";
import { test } from "node:test";
import pino from "pino";
import { logLineSchema } from "../../src/observe/log-schema.js";
import { logSessions } from "../../src/observe/session-log.js";
import { addressOf } from "../../src/protocol/address.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../../src/protocol/udp.js";
import { startFerry } from "../helpers/ferry.js";
import { socks5Request } from "../helpers/socks-raw.js";
import { sendTo, startUdpEcho, udpClient } from "../helpers/udp.js";

function memoryLogger(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { log: pino({ base: { pid: process.pid, hostname: "test" } }, sink), lines };
}

test("the end-of-session line carries datagrams and bytes each way for UDP, and the peer for BIND", async () => {
  const echo = await startUdpEcho();
  const ferry = await startFerry({});
  const { log, lines } = memoryLogger();
  logSessions(ferry.server, log);
  try {
    const client = await udpClient();
    const udp = await socks5Request(ferry, "udp", addressOf("0.0.0.0", client.port));
    const relay = udp.reply.address;
    const bad = await udpClient("127.0.0.2");
    await sendTo(bad.socket, Buffer.from("junk"), relay.port, relay.host);
    await sendTo(
      client.socket,
      encodeUdpDatagram({ frag: 0, address: addressOf("127.0.0.1", echo.port), data: Buffer.from("12345") }),
      relay.port,
      relay.host,
    );
    assert.equal(parseUdpDatagram((await client.next())!).data.toString(), "12345");
    let record = ferry.nextRecord();
    udp.socket.end();
    await record;

    const bind = await socks5Request(ferry, "bind", addressOf("0.0.0.0", 0));
    const peer = net.connect({ host: "127.0.0.1", port: bind.reply.address.port });
    peer.on("error", () => {});
    await once(peer, "connect");
    const peerPort = peer.localPort;
    await bind.next();
    record = ferry.nextRecord();
    bind.socket.destroy();
    peer.destroy();
    await record;

    // Every line fits the documented schema (docs/logging.md); the end lines are checked below.
    for (const l of lines) logLineSchema.parse(l);
    const [udpLine, bindLine] = lines.filter((l) => l.event === "session.end");
    assert.equal(udpLine?.command, "udp");
    assert.equal(udpLine?.datagramsUp, 1);
    assert.equal(udpLine?.datagramsDown, 1);
    assert.equal(udpLine?.bytesUp, 5);
    assert.equal(udpLine?.bytesDown, 5);
    assert.deepEqual(udpLine?.datagramsDropped, { "wrong source": 1 });
    assert.equal(bindLine?.command, "bind");
    assert.equal(bindLine?.peer, `127.0.0.1:${peerPort}`);
    client.close();
    bad.close();
  } finally {
    await ferry.close();
    await echo.close();
  }
});
