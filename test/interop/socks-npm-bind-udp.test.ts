import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { test } from "node:test";
import { SocksClient, type SocksClientOptions, type SocksRemoteHost } from "socks";
import { normalizeIp } from "../../src/policy/addresses.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { sha256, waitFor } from "../helpers/net.js";
import { sendTo, startUdpEcho, udpClient } from "../helpers/udp.js";

// SocksClient.createConnection accepts only CONNECT; BIND and ASSOCIATE use the event API its
// README shows ('bound', then 'established').

async function withFerry(fn: (f: RunningFerry) => Promise<void>): Promise<void> {
  const ferry = await startFerry({});
  try {
    await fn(ferry);
  } finally {
    await ferry.close();
  }
}

for (const type of [4, 5] as const) {
  test(`the socks package BINDs over SOCKS${type}: a peer connects to the announced address, data flows both ways`, async () => {
    await withFerry(async (ferry) => {
      const client = new SocksClient({
        proxy: { host: "127.0.0.1", port: ferry.port, type },
        command: "bind",
        destination: { host: "0.0.0.0", port: 0 },
        timeout: 15_000,
      } as SocksClientOptions);
      const bound = new Promise<SocksRemoteHost>((resolve, reject) => {
        client.once("bound", (info) => resolve(info.remoteHost!));
        client.once("error", reject);
      });
      const established = new Promise<{ socket: net.Socket; remoteHost?: SocksRemoteHost }>(
        (resolve, reject) => {
          client.once("established", resolve);
          client.once("error", reject);
        },
      );
      client.connect();
      const where = await bound;
      assert.equal(where.host, "127.0.0.1");
      const peer = net.connect({ host: where.host, port: where.port });
      peer.on("error", () => {});
      await once(peer, "connect");
      const { socket, remoteHost } = await established;
      assert.equal(remoteHost?.port, peer.localPort, "the second reply names the peer");
      try {
        const up = Buffer.alloc(50_000, "c");
        const down = Buffer.alloc(40_000, "p");
        const atPeer: Buffer[] = [];
        const atClient: Buffer[] = [];
        peer.on("data", (b: Buffer) => atPeer.push(b));
        socket.on("data", (b: Buffer) => atClient.push(b));
        socket.write(up);
        peer.write(down);
        await waitFor(
          () => Buffer.concat(atPeer).length >= up.length && Buffer.concat(atClient).length >= down.length,
          5000,
          "data both ways",
        );
        assert.equal(sha256(Buffer.concat(atPeer)), sha256(up));
        assert.equal(sha256(Buffer.concat(atClient)), sha256(down));
      } finally {
        socket.destroy();
        peer.destroy();
      }
    });
  });
}

for (const target of ["127.0.0.1", "::1"]) {
  test(`the socks package's UDP ASSOCIATE reaches a UDP echo server on ${target}`, async () => {
    const echo = await startUdpEcho(target);
    const local = await udpClient("127.0.0.1");
    try {
      await withFerry(async (ferry) => {
        const info = await new Promise<{ socket: net.Socket; remoteHost?: SocksRemoteHost }>(
          (resolve, reject) => {
            const client = new SocksClient({
              proxy: { host: "127.0.0.1", port: ferry.port, type: 5 },
              command: "associate",
              destination: { host: "0.0.0.0", port: local.port },
              timeout: 15_000,
            });
            client.once("established", resolve);
            client.once("error", reject);
            client.connect();
          },
        );
        try {
          const relay = info.remoteHost!;
          assert.equal(relay.host, "127.0.0.1");
          for (let i = 0; i < 3; i++) {
            const packet = SocksClient.createUDPFrame({
              remoteHost: { host: target, port: echo.port },
              data: Buffer.from(`datagram ${i} to ${target}`),
            });
            await sendTo(local.socket, packet, relay.port, relay.host);
            const reply = await local.next();
            assert.ok(reply, "a reply came back");
            const frame = SocksClient.parseUDPFrame(reply);
            assert.equal(frame.data.toString(), `datagram ${i} to ${target}`);
            assert.equal(frame.remoteHost.port, echo.port);
            assert.equal(net.isIPv6(frame.remoteHost.host), target.includes(":"));
          }
          assert.equal(echo.received.length, 3);
        } finally {
          info.socket.destroy();
        }
      });
    } finally {
      local.close();
      await echo.close();
    }
  });
}

/**
 * The socks package associating from one family over a control connection of the other (issue
 * 13): the relay opens in the family the client declared, so its datagrams are relayed.
 */
async function associateFrom(
  proxy: { host: string; port: number },
  declared: { host: string; port: number },
): Promise<{ socket: net.Socket; relay: SocksRemoteHost }> {
  const info = await new Promise<{ socket: net.Socket; remoteHost?: SocksRemoteHost }>((resolve, reject) => {
    const client = new SocksClient({
      proxy: { ...proxy, type: 5 },
      command: "associate",
      destination: declared,
      timeout: 15_000,
    });
    client.once("established", resolve);
    client.once("error", reject);
    client.connect();
  });
  return { socket: info.socket, relay: info.remoteHost! };
}

for (const [control, client] of [
  ["127.0.0.1", "::1"],
  ["::1", "127.0.0.1"],
] as const) {
  test(`the socks package associating from ${client} over a control connection to ${control} is relayed; other sources are not`, async () => {
    const echo = await startUdpEcho(client);
    const local = await udpClient(client);
    const intruder = await udpClient(client);
    const listen = control.includes(":") ? `[${control}]:0` : `${control}:0`;
    const ferry = await startFerry({ listen: [listen] });
    try {
      const { socket, relay } = await associateFrom(
        { host: control, port: ferry.port },
        { host: client, port: local.port },
      );
      try {
        assert.equal(normalizeIp(relay.host), client, "the relay is announced in the client's family");
        const frame = (text: string) =>
          SocksClient.createUDPFrame({
            remoteHost: { host: client, port: echo.port },
            data: Buffer.from(text),
          });
        // Another port on the client's address is not the client: dropped.
        await sendTo(intruder.socket, frame("intruder"), relay.port, relay.host);
        await sendTo(local.socket, frame("from the declared source"), relay.port, relay.host);
        const reply = await local.next();
        assert.ok(reply, "the echo came back through the relay");
        const parsed = SocksClient.parseUDPFrame(reply);
        assert.equal(parsed.data.toString(), "from the declared source");
        assert.equal(parsed.remoteHost.port, echo.port);
        assert.equal(await intruder.next(300), undefined, "nothing went back to the intruder");
        assert.deepEqual(echo.received.map(String), ["from the declared source"]);
        const record = ferry.nextRecord();
        socket.destroy();
        const r = await record;
        assert.equal(r.datagramsUp, 1);
        assert.equal(r.datagramsDown, 1);
        assert.equal(r.datagramsDropped?.["wrong source"], 1);
      } finally {
        socket.destroy();
      }
    } finally {
      await ferry.close();
      local.close();
      intruder.close();
      await echo.close();
    }
  });
}

test("a declared address of the other family that is not this host's is ignored: the relay stays in the control connection's family", async () => {
  const ferry = await startFerry({});
  try {
    // Documentation prefix: never sent to, only declared.
    const { socket, relay } = await associateFrom(
      { host: "127.0.0.1", port: ferry.port },
      { host: "2001:db8::7", port: 4000 },
    );
    assert.equal(relay.host, "127.0.0.1");
    socket.destroy();
  } finally {
    await ferry.close();
  }
});
