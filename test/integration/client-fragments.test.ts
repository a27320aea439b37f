import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";
import { test } from "node:test";
import { associate } from "../../src/index.js";
import { encodeReply, parseUdpDatagram } from "../../src/protocol/index.js";
import { encodeUdpHeader } from "../../src/protocol/udp.js";
import { sha256 } from "../helpers/net.js";

/**
 * A scripted SOCKS5 peer: answers the greeting and UDP ASSOCIATE with a relay socket the test
 * owns, so the exact datagrams the client sends (and how it takes fragments) can be checked.
 */
test("associate: client-side fragmentation out, reassembly in (RFC 1928 §7)", {
  timeout: 60_000,
}, async () => {
  const relay = dgram.createSocket("udp4");
  relay.bind(0, "127.0.0.1");
  await once(relay, "listening");
  const relayPort = relay.address().port;
  const control = net.createServer((s) => {
    s.on("error", () => {});
    s.once("data", () => {
      s.write(Buffer.from([5, 0])); // no authentication
      s.once("data", () => s.write(encodeReply(0, { type: "ipv4", host: "127.0.0.1", port: relayPort })));
    });
  });
  control.listen(0, "127.0.0.1");
  await once(control, "listening");
  const proxy = `socks5://127.0.0.1:${(control.address() as net.AddressInfo).port}`;

  const udp = await associate(proxy, { fragmentSize: 1000 });
  try {
    const big = randomBytes(4500);
    const packets: Buffer[] = [];
    const gotAll = new Promise<dgram.RemoteInfo>((resolve) => {
      relay.on("message", (msg, rinfo) => {
        packets.push(msg);
        if (packets.length === 5) resolve(rinfo);
      });
    });
    await udp.send(big, "127.0.0.1:5353");
    const client = await gotAll;
    const parsed = packets.map((p) => parseUdpDatagram(p));
    assert.deepEqual(
      parsed.map((d) => d.frag),
      [1, 2, 3, 4, 0x85],
      "positions 1..5, the last with the end bit",
    );
    assert.ok(parsed.every((d) => d.address.host === "127.0.0.1" && d.address.port === 5353));
    assert.equal(sha256(Buffer.concat(parsed.map((d) => d.data))), sha256(big));

    // Small datagrams go whole.
    await udp.send("small", "127.0.0.1:5353");
    const [whole] = (await once(relay, "message")) as [Buffer];
    assert.equal(parseUdpDatagram(whole).frag, 0);

    // Incoming fragments are joined into one 'message'.
    const from = { type: "ipv4" as const, host: "127.0.0.1", port: 53 };
    const message = once(udp, "message") as Promise<[Buffer, { host: string; port: number }]>;
    for (const [frag, text] of [
      [1, "frag"],
      [2, "ment"],
      [0x83, "ed"],
    ] as const) {
      relay.send(
        Buffer.concat([encodeUdpHeader(from, frag), Buffer.from(text)]),
        client.port,
        client.address,
      );
    }
    const [data, sender] = await message;
    assert.equal(data.toString(), "fragmented");
    assert.equal(sender.port, 53);
    // Datagrams from anyone but the relay are ignored.
    const stranger = dgram.createSocket("udp4");
    const ignored = new Promise<boolean>((resolve) => {
      udp.once("message", () => resolve(false));
      setTimeout(() => resolve(true), 300);
    });
    stranger.send(Buffer.concat([encodeUdpHeader(from), Buffer.from("spoof")]), client.port, client.address);
    assert.equal(await ignored, true);
    stranger.close();
  } finally {
    udp.close();
    relay.close();
    control.close();
  }
});
