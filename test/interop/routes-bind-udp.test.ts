import assert from "node:assert/strict";
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";
import { after, describe, test } from "node:test";
import { SocksClient, type SocksRemoteHost } from "socks";

type Established = Awaited<ReturnType<typeof SocksClient.createConnection>>;

import type { FileConfig } from "../../src/config/schema.js";
import { type RunningDante, startDante } from "../helpers/dante.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { retryUntil, waitFor } from "../helpers/net.js";
import { requireRoot, requireTool } from "../helpers/tools.js";

/** Ferry whose rules send BIND and UDP through `via` (and nothing else). */
function ferryVia(via: string, config: Partial<FileConfig>): Promise<RunningFerry> {
  return startFerry({ ...config, rules: [{ allow: { commands: ["bind", "udp"], via } }, { allow: {} }] });
}

describe("BIND and UDP ASSOCIATE through a Dante upstream", { timeout: 120_000 }, () => {
  const stops: (() => unknown)[] = [];
  after(async () => {
    for (const stop of stops.reverse()) await stop();
  });
  let dante: RunningDante | undefined;
  let ferry: RunningFerry | undefined;
  const setup = async (): Promise<RunningFerry> => {
    if (ferry) return ferry;
    // Dante's external address is 127.0.0.3: what it announces and sends from, unlike Ferry (127.0.0.1).
    dante = await startDante({ auth: {}, external: "127.0.0.3" });
    stops.push(() => dante!.stop());
    process.env.FERRY_TEST_DANTE_BIND_PW = dante.password!;
    ferry = await ferryVia("dante", {
      upstreams: {
        dante: {
          url: `socks5://127.0.0.1:${dante.port}`,
          user: dante.user!,
          password: "$" + "{FERRY_TEST_DANTE_BIND_PW}",
        },
      },
    });
    stops.push(ferry.close);
    return ferry;
  };

  test("BIND: the client is told Dante's listening address, and a peer that connects there reaches it", async (t) => {
    if (!requireTool(t, "/usr/sbin/danted", "dante-server") || !requireRoot(t, "Dante's username auth"))
      return;
    const f = await setup();
    const client = new SocksClient({
      proxy: { host: f.host, port: f.port, type: 5 },
      command: "bind",
      destination: { host: "0.0.0.0", port: 0 },
      timeout: 10_000,
    });
    const bound = new Promise<SocksRemoteHost>((resolve, reject) => {
      client.once("bound", (info) => resolve(info.remoteHost!));
      client.once("error", reject);
    });
    const established = new Promise<Established>((resolve, reject) => {
      client.once("established", resolve);
      client.once("error", reject);
    });
    client.connect();
    const where = await bound;
    assert.equal(where.host, "127.0.0.3", "Ferry passes on the address Dante announced");
    const peer = net.connect({ host: where.host, port: where.port, localAddress: "127.0.0.1" });
    await once(peer, "connect");
    const info = await established;
    assert.equal(info.remoteHost?.host, "127.0.0.1", "second reply: the peer's address");
    assert.equal(info.remoteHost?.port, peer.localPort);
    info.socket.write("from client");
    const [got] = await once(peer, "data");
    assert.equal(got.toString(), "from client");
    peer.end("from peer");
    const chunks: Buffer[] = [];
    info.socket.on("data", (c: Buffer) => chunks.push(c));
    await once(info.socket, "end");
    info.socket.destroy();
    peer.destroy();
    assert.equal(Buffer.concat(chunks).toString(), "from peer");
    // The record comes when Ferry sees the close, which a loaded machine may delay.
    await waitFor(() => f.records.some((r) => r.command === "bind"), 10_000, "the bind session record");
    const record = f.records.find((r) => r.command === "bind");
    assert.ok(record, "a bind session record");
    assert.equal(record.bound, `127.0.0.3:${where.port}`);
  });

  test("UDP: datagrams go out through Dante (the target sees 127.0.0.3) and answers come back", async (t) => {
    if (!requireTool(t, "/usr/sbin/danted", "dante-server") || !requireRoot(t, "Dante's username auth"))
      return;
    const f = await setup();
    const target = dgram.createSocket("udp4");
    target.on("message", (msg, rinfo) =>
      target.send(`${msg} seen from ${rinfo.address}`, rinfo.port, rinfo.address),
    );
    target.bind(0, "127.0.0.1");
    await once(target, "listening");
    stops.push(() => target.close());
    const udp = dgram.createSocket("udp4");
    udp.bind(0, "127.0.0.1");
    await once(udp, "listening");
    stops.push(() => udp.close());
    const associating = new SocksClient({
      proxy: { host: f.host, port: f.port, type: 5 },
      command: "associate",
      destination: { host: "127.0.0.1", port: udp.address().port },
      timeout: 10_000,
    });
    const { socket, remoteHost } = await new Promise<Established>((resolve, reject) => {
      associating.once("established", resolve);
      associating.once("error", reject);
      associating.connect();
    });
    stops.push(() => socket.destroy());
    assert.ok(remoteHost);
    const answers: string[] = [];
    udp.on("message", (msg) => {
      const frame = SocksClient.parseUDPFrame(msg);
      answers.push(`${frame.data} via ${frame.remoteHost.host}:${frame.remoteHost.port}`);
    });
    const targetPort = target.address().port;
    const frame = SocksClient.createUDPFrame({
      remoteHost: { host: "127.0.0.1", port: targetPort },
      data: Buffer.from("ping"),
    });
    // UDP may drop; resend every 100 ms, for up to 10 s, until the answer comes.
    await retryUntil(
      () => udp.send(frame, remoteHost.port, remoteHost.host),
      () => answers.length > 0,
    );
    assert.equal(answers[0], `ping seen from 127.0.0.3 via 127.0.0.1:${targetPort}`);
  });
});
