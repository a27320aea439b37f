import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import https from "node:https";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { fetch } from "undici";
import { associate, bind, connect, SocksAgent, SocksDispatcher, SocksError } from "../../src/index.js";
import { DANTED, type RunningDante, startDante } from "../helpers/dante.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { retryUntil, sha256, startEchoServer } from "../helpers/net.js";
import {
  echoThrough,
  selfSignedCert,
  startHttpsServer,
  startUdpEcho,
  type TestHttpsServer,
} from "../helpers/targets.js";
import { requireTool } from "../helpers/tools.js";

const payload = randomBytes(512 * 1024);

/**
 * Dante's username method checks system accounts: startDante({ auth }) creates a throwaway,
 * login-less account with useradd (the tests run as root) and deletes it in stop().
 */
describe("client library against Dante (danted): CONNECT, BIND, UDP, username auth", {
  timeout: 180_000,
}, () => {
  let dante: RunningDante | undefined;
  let echo: { port: number; close: () => Promise<void> };
  let web: TestHttpServer;
  let secure: TestHttpsServer;
  let ca: Buffer;

  before(async () => {
    echo = await startEchoServer();
    web = await startHttpServer();
    const cert = await selfSignedCert();
    ca = cert.cert;
    secure = await startHttpsServer(cert);
  });
  after(async () => {
    await dante?.stop();
    await echo?.close();
    await web?.close();
    await secure?.close();
  });
  const started = async (t: { skip(m: string): void } & Parameters<typeof requireTool>[0]) => {
    if (!requireTool(t, DANTED, "dante-server")) return undefined;
    dante ??= await startDante({ auth: {} });
    return dante;
  };

  test("connect with username/password: bytes intact; a wrong password is a typed auth error", async (t) => {
    const d = await started(t);
    if (!d) return;
    const socket = await connect(d.url, `127.0.0.1:${echo.port}`);
    assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
    const wrong = d.url.replace(`:${d.password}@`, ":not-the-password@");
    await assert.rejects(connect(wrong, `127.0.0.1:${echo.port}`), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.stage, "auth");
      assert.equal(err.hop, 0);
      return true;
    });
    const noCreds = d.url.replace(/\/\/[^@]*@/, "//");
    await assert.rejects(connect(noCreds, `127.0.0.1:${echo.port}`), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.stage, "negotiate");
      return true;
    });
  });

  test("a refused target: SocksError with reply 5, connection refused", async (t) => {
    const d = await started(t);
    if (!d) return;
    const closed = net.createServer();
    closed.listen(0, "127.0.0.1");
    await once(closed, "listening");
    const deadPort = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    await assert.rejects(connect(d.url, `127.0.0.1:${deadPort}`), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.reply, 5);
      assert.equal(err.replyName, "connection refused");
      return true;
    });
  });

  test("bind: the peer connects to the announced address; both replies; data both ways", async (t) => {
    const d = await started(t);
    if (!d) return;
    const b = await bind(d.url, { acceptTimeout: 10_000 });
    assert.ok(b.port > 0, "first reply names a port");
    const peer = net.connect({ host: b.address, port: b.port });
    await once(peer, "connect");
    const { socket, peer: reported } = await b.accepted;
    assert.equal(reported.port, peer.localPort, "second reply names the peer");
    socket.write("from the binder");
    const [fromBinder] = (await once(peer, "data")) as [Buffer];
    assert.equal(fromBinder.toString(), "from the binder");
    peer.end("from the peer");
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    await once(socket, "end");
    assert.equal(Buffer.concat(chunks).toString(), "from the peer");
    socket.destroy();
    peer.destroy();
  });

  test("associate: UDP datagrams out and back through the relay", async (t) => {
    const d = await started(t);
    if (!d) return;
    const udpEcho = await startUdpEcho();
    const udp = await associate(d.url);
    try {
      const replies: { data: string; from: string }[] = [];
      udp.on("message", (data, from) =>
        replies.push({ data: data.toString(), from: `${from.host}:${from.port}` }),
      );
      // UDP may drop; resend every 100 ms, for up to 10 s, until the answer comes.
      await retryUntil(
        () => udp.send("ping", `127.0.0.1:${udpEcho.port}`),
        () => replies.length > 0,
      );
      assert.deepEqual(replies[0], { data: "echo:ping", from: `127.0.0.1:${udpEcho.port}` });
      assert.equal(udpEcho.received[0]?.toString(), "ping");
    } finally {
      const closed = once(udp, "close");
      udp.close();
      await closed;
      udpEcho.close();
    }
  });

  test("SocksAgent https.get and the undici dispatcher through Dante", async (t) => {
    const d = await started(t);
    if (!d) return;
    const agent = new SocksAgent(d.url, { tls: { ca } });
    const body = await new Promise<string>((resolve, reject) => {
      https
        .get(`https://localhost:${secure.port}/dante`, { agent }, (res) => {
          let text = "";
          res.on("data", (c: Buffer) => {
            text += c.toString();
          });
          res.on("end", () => resolve(text));
        })
        .on("error", reject);
    });
    assert.equal(body, "secure /dante\n");
    agent.destroy();
    const dispatcher = new SocksDispatcher(d.url);
    const res = await fetch(`${web.origin}/bytes/200000`, { dispatcher });
    assert.equal((await res.arrayBuffer()).byteLength, 200000);
    await dispatcher.close();
  });
});
