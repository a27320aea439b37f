import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { fetch } from "undici";
import {
  associate,
  bind,
  connect,
  describeHop,
  parseProxyUrl,
  parseTarget,
  SocksAgent,
  SocksDispatcher,
  SocksError,
} from "../../src/index.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { retryUntil, sha256, startEchoServer, waitFor } from "../helpers/net.js";
import { freePort } from "../helpers/process.js";
import {
  echoThrough,
  selfSignedCert,
  startHttpsServer,
  startUdpEcho,
  type TestHttpsServer,
} from "../helpers/targets.js";

const payload = randomBytes(768 * 1024);

describe("client library against Ferry's server", { timeout: 120_000 }, () => {
  let ferry: RunningFerry;
  let authed: RunningFerry;
  let echo: { port: number; close: () => Promise<void> };
  let web: TestHttpServer;
  let secure: TestHttpsServer;
  let ca: Buffer;
  const port = (f: RunningFerry) => `127.0.0.1:${f.port}`;

  before(async () => {
    ferry = await startFerry();
    authed = await startFerry({}, { inlineUsers: [{ name: "alice", password: "s3cret:@/" }] });
    echo = await startEchoServer();
    web = await startHttpServer();
    const cert = await selfSignedCert();
    ca = cert.cert;
    secure = await startHttpsServer(cert);
  });
  after(async () => {
    await ferry?.close();
    await authed?.close();
    await echo?.close();
    await web?.close();
    await secure?.close();
  });

  test("proxy URLs and targets parse as people write them", () => {
    assert.deepEqual(parseProxyUrl("socks5h://a%40b:p%3Ass@[::1]:1081"), {
      version: 5,
      remoteDns: true,
      host: "::1",
      port: 1081,
      username: "a@b",
      password: "p:ss",
    });
    assert.deepEqual(parseProxyUrl("socks4://10.0.0.1"), {
      version: 4,
      remoteDns: false,
      host: "10.0.0.1",
      port: 1080,
    });
    assert.equal(parseProxyUrl("socks4a://h:1").remoteDns, true);
    assert.equal(parseProxyUrl("socks5://h:1").remoteDns, false);
    assert.throws(
      () => parseProxyUrl("ftp://h:1"),
      /use socks4:\/\/, socks4a:\/\/, socks5:\/\/, socks5h:\/\/, socks5\+tls/,
    );
    // HTTP CONNECT proxies, plain and inside TLS, and SOCKS5 inside TLS (docs/tls.md).
    assert.deepEqual(parseProxyUrl("http://h:3128"), {
      version: 5,
      remoteDns: true,
      http: true,
      host: "h",
      port: 3128,
    });
    assert.deepEqual(parseProxyUrl("https://u:p@h?ca=/etc/ca.pem"), {
      version: 5,
      remoteDns: true,
      http: true,
      host: "h",
      port: 443,
      username: "u",
      password: "p",
      tls: { ca: "/etc/ca.pem" },
    });
    const tlsHop = parseProxyUrl(
      "socks5h+tls://h:1443?ca=/a/ca.pem&cert=/a/c.pem&key=/a/c.key&servername=proxy.example",
    );
    assert.deepEqual(tlsHop, {
      version: 5,
      remoteDns: true,
      host: "h",
      port: 1443,
      tls: { ca: "/a/ca.pem", cert: "/a/c.pem", key: "/a/c.key", servername: "proxy.example" },
    });
    assert.equal(
      describeHop(tlsHop),
      "socks5h+tls://h:1443?ca=/a/ca.pem&cert=/a/c.pem&key=/a/c.key&servername=proxy.example",
    );
    assert.equal(parseProxyUrl("socks5+tls://h").remoteDns, false);
    assert.throws(
      () => parseProxyUrl("socks5h://h:1?ca=/x"),
      /ca apply to TLS only; use https:\/\/, socks5\+tls/,
    );
    assert.deepEqual(parseTarget("[2001:db8::1]:443"), { type: "ipv6", host: "2001:db8::1", port: 443 });
    assert.deepEqual(parseTarget("example.com:80"), { type: "domain", host: "example.com", port: 80 });
    assert.deepEqual(parseTarget({ host: "127.0.0.1", port: 9 }), {
      type: "ipv4",
      host: "127.0.0.1",
      port: 9,
    });
    assert.throws(() => parseTarget("nohost"), /expected host:port/);
  });

  const versions = [
    { scheme: "socks5h", protocol: "socks5", target: "localhost" },
    { scheme: "socks5", protocol: "socks5", target: "127.0.0.1" },
    { scheme: "socks4a", protocol: "socks4a", target: "localhost" },
    { scheme: "socks4", protocol: "socks4", target: "127.0.0.1" },
  ];
  for (const v of versions) {
    test(`connect over ${v.scheme}:// to a name: bytes intact, resolved where the scheme says`, async () => {
      const next = ferry.nextRecord();
      const socket = await connect(`${v.scheme}://${port(ferry)}`, `localhost:${echo.port}`);
      assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
      const record = await next;
      assert.equal(record.protocol, v.protocol);
      assert.equal(record.target, `${v.target}:${echo.port}`);
      assert.equal(record.bytesUp, payload.length);
    });
  }

  test("bytes the target sends first are not lost in the handshake", async () => {
    const banner = net.createServer((s) => s.end("SSH-2.0-banner-first\r\n"));
    banner.listen(0, "127.0.0.1");
    await once(banner, "listening");
    try {
      const target = { host: "127.0.0.1", port: (banner.address() as net.AddressInfo).port };
      const socket = await connect(ferry.url, target);
      // Let the banner arrive (and sit in the handshake reader's buffer) before we read.
      await new Promise((r) => setTimeout(r, 100));
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      await once(socket, "end");
      assert.equal(Buffer.concat(chunks).toString(), "SSH-2.0-banner-first\r\n");
    } finally {
      banner.close();
    }
  });

  test("username/password: accepted; wrong or missing credentials are typed errors", async () => {
    const next = authed.nextRecord();
    const url = `socks5h://alice:${encodeURIComponent("s3cret:@/")}@${port(authed)}`;
    const socket = await connect(url, `127.0.0.1:${echo.port}`);
    assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
    assert.equal((await next).user, "alice");

    await assert.rejects(
      connect(`socks5h://alice:wrong@${port(authed)}`, `127.0.0.1:${echo.port}`),
      (err) => {
        assert.ok(err instanceof SocksError);
        assert.equal(err.stage, "auth");
        assert.equal(err.hop, 0);
        assert.match(err.message, /rejected user "alice"/);
        assert.doesNotMatch(err.message, /wrong/, "the password never appears in messages");
        return true;
      },
    );
    await assert.rejects(connect(`socks5h://${port(authed)}`, `127.0.0.1:${echo.port}`), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.stage, "negotiate");
      assert.match(err.message, /user name and password/);
      return true;
    });
  });

  test("a refused target is a SocksError with the reply code, its name and the hop", async () => {
    const deadPort = await freePort();
    const cases = [
      { scheme: "socks5h", reply: 5, name: "connection refused", version: 5 },
      { scheme: "socks4a", reply: 91, name: "request rejected or failed", version: 4 },
    ];
    for (const c of cases) {
      await assert.rejects(connect(`${c.scheme}://${port(ferry)}`, `127.0.0.1:${deadPort}`), (err) => {
        assert.ok(err instanceof SocksError);
        assert.equal(err.reply, c.reply);
        assert.equal(err.replyName, c.name);
        assert.equal(err.hop, 0);
        assert.equal(err.version, c.version);
        assert.equal(err.code, "ESOCKS_REQUEST");
        return true;
      });
    }
    // Two deep: the second proxy reports the refusal, so the error names hop 1. (The second hop
    // is another server: Ferry refuses to proxy to its own listener.)
    const second = await startFerry();
    try {
      await assert.rejects(
        connect([ferry.url, `socks4://${port(second)}`], `127.0.0.1:${deadPort}`),
        (err) => {
          assert.ok(err instanceof SocksError);
          assert.equal(err.hop, 1);
          assert.equal(err.reply, 91);
          return true;
        },
      );
    } finally {
      await second.close();
    }
    // The first proxy cannot reach the second: hop 0 reports it.
    await assert.rejects(connect([ferry.url, `socks5h://127.0.0.1:${deadPort}`], "127.0.0.1:1"), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.hop, 0);
      assert.equal(err.replyName, "connection refused");
      return true;
    });
    // Nothing listens where the first proxy should be.
    await assert.rejects(connect(`socks5h://127.0.0.1:${deadPort}`, "127.0.0.1:1"), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.stage, "connect");
      assert.match(err.message, /ECONNREFUSED/);
      return true;
    });
  });

  test("timeout, AbortSignal and local address", async () => {
    const silent = net.createServer((s) => s.on("error", () => {}));
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    const silentUrl = `socks5h://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    try {
      const t0 = Date.now();
      await assert.rejects(connect(silentUrl, "127.0.0.1:1", { timeout: 300 }), (err) => {
        assert.ok(err instanceof SocksError);
        assert.equal(err.stage, "timeout");
        return true;
      });
      // Without the option nothing would ever end the wait; 8 s leaves room for a loaded machine.
      assert.ok(Date.now() - t0 < 8000, "the timeout fired on time");
      const aborter = new AbortController();
      setTimeout(() => aborter.abort(), 50);
      await assert.rejects(connect(silentUrl, "127.0.0.1:1", { signal: aborter.signal }), (err) => {
        assert.ok(err instanceof SocksError);
        assert.equal(err.stage, "aborted");
        return true;
      });
    } finally {
      silent.close();
    }
    const next = ferry.nextRecord();
    const socket = await connect(ferry.url, `127.0.0.1:${echo.port}`, { localAddress: "127.0.0.7" });
    assert.equal(socket.localAddress, "127.0.0.7");
    socket.destroy();
    assert.equal((await next).client, "127.0.0.7");
  });

  test("SocksAgent: http.get through the proxy, the connection kept alive", async () => {
    const agent = new SocksAgent(ferry.url);
    const before = ferry.records.length;
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        http
          .get(`${web.origin}${path}`, { agent }, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => {
              body += c;
            });
            res.on("end", () => resolve(body));
          })
          .on("error", reject);
      });
    assert.equal(await get("/"), web.greeting);
    assert.equal(await get("/"), web.greeting);
    const closed = ferry.nextRecord();
    agent.destroy();
    const record = await closed;
    assert.equal(record.target, `127.0.0.1:${web.port}`);
    assert.equal(ferry.records.length, before + 1, "both requests used one proxied connection");
  });

  test("SocksAgent: https.get to a self-signed server, TLS end to end, name resolved by the proxy", async () => {
    const agent = new SocksAgent(ferry.url, { tls: { ca } });
    const next = ferry.nextRecord();
    const body = await new Promise<string>((resolve, reject) => {
      https
        .get(`https://localhost:${secure.port}/tls`, { agent }, (res) => {
          let text = "";
          res.on("data", (c: Buffer) => {
            text += c.toString();
          });
          res.on("end", () => resolve(text));
        })
        .on("error", reject);
    });
    assert.equal(body, "secure /tls\n");
    agent.destroy();
    assert.equal((await next).target, `localhost:${secure.port}`);
    // Without the CA the certificate is refused: TLS really runs end to end.
    const strict = new SocksAgent(ferry.url);
    await assert.rejects(
      new Promise((resolve, reject) =>
        https.get(`https://localhost:${secure.port}/`, { agent: strict }, resolve).on("error", reject),
      ),
      /self[- ]signed/,
    );
    strict.destroy();
  });

  test("SocksDispatcher: undici fetch over http and https, kept alive", async () => {
    const dispatcher = new SocksDispatcher(ferry.url, { tls: { ca }, connections: 1 });
    const since = Date.now();
    const a = await fetch(`${web.origin}/`, { dispatcher });
    assert.equal(await a.text(), web.greeting);
    const b = await fetch(`${web.origin}/bytes/100000`, { dispatcher });
    assert.equal((await b.arrayBuffer()).byteLength, 100000);
    const c = await fetch(`https://localhost:${secure.port}/undici`, { dispatcher });
    assert.equal(await c.text(), "secure /undici\n");
    await dispatcher.close();
    // A record is emitted when Ferry sees the close, which a loaded machine may delay.
    const recent = () => ferry.records.filter((r) => r.startedAt >= since);
    await waitFor(() => recent().length >= 2, 10_000, "two session records");
    await new Promise((r) => setTimeout(r, 100)); // and no third one
    const targets = recent().map((r) => r.target);
    assert.deepEqual(targets.sort(), [`127.0.0.1:${web.port}`, `localhost:${secure.port}`].sort());
  });

  for (const scheme of ["socks5h", "socks4"]) {
    test(`bind over ${scheme}://: first reply where, second reply who, data both ways`, async () => {
      const next = ferry.nextRecord();
      const b = await bind(`${scheme}://${port(ferry)}`, { acceptTimeout: 10_000 });
      assert.equal(b.address, "127.0.0.1");
      const peer = net.connect({ host: b.address, port: b.port });
      await once(peer, "connect");
      const { socket, peer: reported } = await b.accepted;
      assert.deepEqual(
        { host: reported.host, port: reported.port },
        { host: "127.0.0.1", port: peer.localPort },
      );
      socket.write("to the peer");
      const [got] = (await once(peer, "data")) as [Buffer];
      assert.equal(got.toString(), "to the peer");
      peer.end(payload);
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      await once(socket, "end");
      assert.equal(sha256(Buffer.concat(chunks)), sha256(payload));
      socket.destroy();
      peer.destroy();
      const record = await next;
      assert.equal(record.command, "bind");
      assert.equal(record.bytesDown, payload.length);
    });
  }

  test("associate: datagrams out and back; a large one fragmented by the client, reassembled by Ferry", async () => {
    const udpEcho = await startUdpEcho();
    const udp = await associate(ferry.url, { fragmentSize: 1400 });
    try {
      const replies: Buffer[] = [];
      udp.on("message", (data, from) => {
        assert.equal(from.port, udpEcho.port);
        replies.push(data);
      });
      const big = randomBytes(6000);
      // UDP may drop even on loopback; resend every 100 ms for up to 10 s.
      await retryUntil(
        () => udp.send(big, `127.0.0.1:${udpEcho.port}`),
        () => replies.length > 0,
      );
      assert.equal(udpEcho.received[0]?.length, big.length, "the target got one whole datagram");
      assert.equal(sha256(udpEcho.received[0]!), sha256(big));
      assert.equal(sha256(replies[0]!), sha256(Buffer.concat([Buffer.from("echo:"), big])));
    } finally {
      udp.close();
      udpEcho.close();
    }
  });

  test("bind and associate errors are typed: SOCKS4 has no UDP", async () => {
    await assert.rejects(associate(`socks4://${port(ferry)}`), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.stage, "request");
      assert.match(err.message, /SOCKS4 has no UDP ASSOCIATE/);
      return true;
    });
  });
});
