import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import type { LoginEvent } from "../../src/auth/login-guard.js";
import type { AuthMethod } from "../../src/auth/method.js";
import { TokenBucket } from "../../src/server/limits.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { pseudoRandomSha256, startHttpServer } from "../helpers/http.js";
import {
  type EchoTarget,
  headerValues,
  LOOPBACK_RULES,
  parseRawHead,
  parseRawResponse,
  startEchoTarget,
  viaProxy,
} from "../helpers/http-proxy.js";
import { sha256, startEchoServer, waitFor } from "../helpers/net.js";
import { TestClient } from "../helpers/socks.js";

const basic = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

describe("HTTP proxy on the SOCKS port, without logins", () => {
  let ferry: RunningFerry;
  let target: EchoTarget;
  before(async () => {
    ferry = await startFerry({ rules: LOOPBACK_RULES });
    target = await startEchoTarget();
  });
  after(async () => {
    await ferry?.close();
    await target?.close();
  });

  test("an absolute-URI GET reaches the target in origin-form, hop-by-hop headers dropped, Via added", async () => {
    const r = await viaProxy(ferry.port, `${target.origin}/page?q=1`, {
      headers: {
        Host: "ignored.example",
        Connection: "keep-alive, X-Private",
        "X-Private": "connection-only",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": basic("nobody", "secret"),
        "Proxy-Connection": "keep-alive",
        TE: "trailers",
        Upgrade: "websocket",
        Via: "1.1 earlier-proxy",
        "X-End-To-End": "kept",
      },
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, "seen GET /page?q=1\n");
    assert.equal(r.headers.via, "1.1 ferry");
    const seen = target.seen.at(-1)!;
    assert.equal(seen.url, "/page?q=1");
    const names = new Set(seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase()));
    for (const gone of [
      "x-private",
      "keep-alive",
      "proxy-authorization",
      "proxy-connection",
      "te",
      "upgrade",
    ])
      assert.ok(!names.has(gone), `${gone} was forwarded`);
    assert.deepEqual(headerValues(seen.rawHeaders, "host"), [`127.0.0.1:${target.port}`]);
    assert.deepEqual(headerValues(seen.rawHeaders, "x-end-to-end"), ["kept"]);
    assert.deepEqual(headerValues(seen.rawHeaders, "via"), ["1.1 earlier-proxy, 1.1 ferry"]);
  });

  test("keep-alive on both sides: one record per request, one connection to the target", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = target.seen.length;
      const skip = ferry.records.length;
      for (let i = 0; i < 3; i++) {
        const r = await viaProxy(ferry.port, `${target.origin}/n${i}`, { agent });
        assert.equal(r.body, `seen GET /n${i}\n`);
      }
      const seen = target.seen.slice(before);
      assert.equal(
        new Set(seen.map((s) => s.remotePort)).size,
        1,
        `the target saw one connection: ${JSON.stringify(seen.map((s) => [s.url, s.remotePort]))}`,
      );
      // Two records are complete while the connection stays open; the live view shows the third.
      // Records of this test's connection: the client port with two complete ones (an earlier
      // test's connection may end meanwhile).
      const mine = (): typeof ferry.records => {
        const recent = ferry.records.slice(skip);
        const port = recent.find(
          (r) => recent.filter((x) => x.clientPort === r.clientPort).length >= 2,
        )?.clientPort;
        return recent.filter((r) => r.clientPort === port);
      };
      await waitFor(() => mine().length >= 2, 5000, "two records");
      const done = mine();
      assert.equal(done.length, 2);
      const live = [...ferry.server.sessions()].find((r) => r.clientPort === done[0]!.clientPort);
      assert.ok(live, "the third request is the connection's running record");
      assert.deepEqual(
        done.map((r) => [r.protocol, r.command, r.status, r.reply]),
        [
          ["http", "http", 200, 0],
          ["http", "http", 200, 0],
        ],
      );
      assert.equal(new Set([...done, live].map((r) => r.id)).size, 3);
      assert.equal(new Set([...done, live].map((r) => r.clientPort)).size, 1);
      for (const r of done) assert.ok(r.bytesDown > 0 && r.bytesUp > 0, "bytes were counted");
    } finally {
      agent.destroy();
    }
  });

  test("a POST body (Content-Length and chunked) reaches the target; a chunked response comes back whole", async () => {
    const sized = await viaProxy(ferry.port, `${target.origin}/echo`, { method: "POST", body: "a=1&b=2" });
    assert.equal(sized.body, "a=1&b=2");
    assert.equal(target.seen.at(-1)!.method, "POST");
    const chunked = await new Promise<string>((resolve, reject) => {
      const req = http.request({
        host: "127.0.0.1",
        port: ferry.port,
        method: "PUT",
        path: `${target.origin}/echo`,
      });
      req.on("error", reject);
      req.on("response", (res) => {
        let text = "";
        res.on("data", (c) => {
          text += c;
        });
        res.on("end", () => resolve(text));
      });
      req.write("part one, ");
      setTimeout(() => req.end("part two"), 20);
    });
    assert.equal(chunked, "part one, part two");
    const response = await viaProxy(ferry.port, `${target.origin}/chunked`);
    assert.equal(response.body, "one,two,three");
    assert.equal(response.headers["transfer-encoding"], "chunked");
  });

  test("HEAD gets the head and no body; the connection stays usable", async () => {
    const c = await TestClient.connect(ferry.port);
    try {
      c.write(`HEAD ${target.origin}/x HTTP/1.1\r\nHost: x\r\n\r\n`);
      const head = await c.read(parseRawHead, 10_000, "the HEAD response");
      assert.match(head, /^HTTP\/1\.1 200 /);
      assert.match(head, /content-length: 13/i);
      c.write(`GET ${target.origin}/after-head HTTP/1.1\r\nHost: x\r\n\r\n`);
      const next = await c.read(
        (b) => {
          const text = Buffer.from(b).toString();
          return text.includes("seen GET /after-head\n") ? { value: text, consumed: b.length } : undefined;
        },
        10_000,
        "the next response",
      );
      assert.match(next, /^HTTP\/1\.1 200 /);
    } finally {
      c.destroy();
    }
  });

  test("pipelined requests are answered in order, each with its own complete record", async () => {
    const c = await TestClient.connect(ferry.port);
    try {
      c.write(
        `GET ${target.origin}/p1 HTTP/1.1\r\nHost: x\r\n\r\nGET ${target.origin}/chunked HTTP/1.1\r\nHost: x\r\n\r\n` +
          `GET ${target.origin}/p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      );
      const { data } = await c.readToEnd(10_000);
      const text = data.toString();
      const order = ["seen GET /p1", "one,", "seen GET /p3"].map((m) => text.indexOf(m));
      assert.ok(order.every((i) => i >= 0) && order[0]! < order[1]! && order[1]! < order[2]!, text);
      await waitFor(
        () => ferry.records.filter((r) => r.clientPort === c.localPort).length === 3,
        5000,
        "3 records",
      );
      const mine = ferry.records.filter((r) => r.clientPort === c.localPort);
      assert.deepEqual(
        mine.map((r) => [r.status, r.reply, r.bytesDown > 0]),
        [
          [200, 0, true],
          [200, 0, true],
          [200, 0, true],
        ],
      );
      assert.equal(new Set(mine.map((r) => r.id)).size, 3);
    } finally {
      c.destroy();
    }
  });

  test("Expect: 100-continue: the target's 100 comes back before the body is sent", async () => {
    const c = await TestClient.connect(ferry.port);
    try {
      c.write(
        `POST ${target.origin}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`,
      );
      const interim = await c.read(parseRawResponse, 10_000, "100 Continue");
      assert.equal(interim.status, 100);
      c.write("hello");
      const final = await c.read(parseRawResponse, 10_000, "the response");
      assert.equal(final.status, 200);
      assert.equal(final.body, "hello");
    } finally {
      c.destroy();
    }
  });

  test("a target that closes mid-response: the client's connection ends short, the record says why", async () => {
    const c = await TestClient.connect(ferry.port);
    c.write(`GET ${target.origin}/cut HTTP/1.1\r\nHost: x\r\n\r\n`);
    const { data, ended } = await c.readToEnd(10_000);
    c.destroy();
    assert.ok(ended, "the proxy closed the client's connection");
    const text = data.toString();
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /content-length: 1000/i);
    assert.ok(text.endsWith("0123456789"), "what came was passed on, and nothing more");
    await waitFor(() => ferry.records.some((r) => r.clientPort === c.localPort), 5000, "the record");
    const r = ferry.records.find((x) => x.clientPort === c.localPort)!;
    assert.match(r.reason ?? "", /ended the response early|mid-response/);
  });

  test("CONNECT tunnels to the target: 200, bytes both ways, one record with command connect", async () => {
    const echo = await startEchoServer();
    try {
      const c = await TestClient.connect(ferry.port);
      c.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`);
      const ok = await c.read(parseRawResponse, 10_000, "the CONNECT answer");
      assert.equal(ok.status, 200);
      c.write("ping through the tunnel");
      assert.equal((await c.readBytes(23)).toString(), "ping through the tunnel");
      c.socket.end();
      await c.waitClosed();
      await waitFor(() => ferry.records.some((r) => r.clientPort === c.localPort), 5000, "the record");
      const r = ferry.records.find((x) => x.clientPort === c.localPort)!;
      assert.equal(r.protocol, "http");
      assert.equal(r.command, "connect");
      assert.equal(r.target, `127.0.0.1:${echo.port}`);
      assert.equal(r.status, 200);
      assert.equal(r.bytesUp, 23);
      assert.equal(r.bytesDown, 23);
    } finally {
      await echo.close();
    }
  });

  test("a dial that fails is 502 with the reason; the connection stays for the next request", async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r = await viaProxy(ferry.port, `http://127.0.0.1:${port}/`, { agent });
      assert.equal(r.status, 502);
      assert.match(r.body, /ECONNREFUSED|refused/);
      const again = await viaProxy(ferry.port, `${target.origin}/again`, { agent });
      assert.equal(again.body, "seen GET /again\n");
    } finally {
      agent.destroy();
    }
  });

  test("a kept-alive target connection closed as it is reused: the GET is sent again on a new one", async () => {
    // The first connection answers once, then drops the next request unanswered (a target whose
    // keep-alive timer fired just then); later connections answer everything.
    const connections: net.Socket[] = [];
    const stale = net.createServer((s) => {
      const index = connections.push(s) - 1;
      let answered = 0;
      s.on("data", (d: Buffer) => {
        for (const _ of d.toString("latin1").matchAll(/\r\n\r\n/g)) {
          if (index === 0 && answered === 1) {
            s.destroy();
            return;
          }
          answered++;
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nconn ${index}\n`);
        }
      });
      s.on("error", () => {});
    });
    await new Promise<void>((r) => stale.listen(0, "127.0.0.1", () => r()));
    const port = (stale.address() as net.AddressInfo).port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await viaProxy(ferry.port, `http://127.0.0.1:${port}/1`, { agent });
      assert.equal(first.body, "conn 0\n");
      const second = await viaProxy(ferry.port, `http://127.0.0.1:${port}/2`, { agent });
      assert.equal(second.status, 200);
      assert.equal(second.body, "conn 1\n");
      assert.equal(connections.length, 2);
    } finally {
      agent.destroy();
      for (const s of connections) s.destroy();
      await new Promise<void>((r) => stale.close(() => r()));
    }
  });

  test("a request to the proxy itself (origin-form) is 400 saying how to use it", async () => {
    const r = await viaProxy(ferry.port, "/just-a-path");
    assert.equal(r.status, 400);
    assert.match(r.body, /absolute URIs/);
  });
});

describe("HTTP proxy logins", () => {
  let ferry: RunningFerry;
  let target: EchoTarget;
  const logins: LoginEvent[] = [];
  before(async () => {
    ferry = await startFerry(
      { rules: LOOPBACK_RULES, limits: { sessionsPerUser: 1 } },
      { inlineUsers: [{ name: "alice", password: "wonderland" }] },
    );
    ferry.context.state.logins.on("login", (e) => logins.push(e));
    target = await startEchoTarget();
  });
  after(async () => {
    await ferry?.close();
    await target?.close();
  });

  test("no login: 407 with a Basic challenge, and the request never leaves", async () => {
    const before = target.seen.length;
    const r = await viaProxy(ferry.port, `${target.origin}/secret`);
    assert.equal(r.status, 407);
    assert.equal(r.headers["proxy-authenticate"], 'Basic realm="ferry", charset="UTF-8"');
    assert.match(r.body, /requires a login/);
    assert.equal(target.seen.length, before);
  });

  test("the right login passes, and the record names the user", async () => {
    const skip = ferry.records.length;
    const r = await viaProxy(ferry.port, `${target.origin}/in`, {
      headers: { "Proxy-Authorization": basic("alice", "wonderland") },
    });
    assert.equal(r.status, 200);
    await waitFor(() => ferry.records.length > skip, 5000, "the record");
    const rec = ferry.records.at(-1)!;
    assert.equal(rec.user, "alice");
    assert.equal(rec.method, "userpass");
  });

  test("wrong passwords are throttled like SOCKS logins, and the client is not told which part was wrong", async () => {
    const first = logins.length;
    for (const password of ["nope", "still-nope"]) {
      const r = await viaProxy(ferry.port, `${target.origin}/in`, {
        headers: { "Proxy-Authorization": basic("alice", password) },
      });
      assert.equal(r.status, 407);
      assert.doesNotMatch(r.body, /wrong password|unknown user/);
    }
    const events = logins.slice(first);
    assert.equal(events.length, 2);
    assert.deepEqual(
      events.map((e) => [e.user, e.method, e.ok, e.failures]),
      [
        ["alice", "userpass", false, 1],
        ["alice", "userpass", false, 2],
      ],
    );
    assert.ok(events[1]!.delayMs > events[0]!.delayMs, "the second failure waits longer");
    await waitFor(() => ferry.records.some((r) => /wrong password/.test(r.reason ?? "")), 5000, "the reason");
  });

  test("sessionsPerUser holds across HTTP: a second tunnel for alice is 429 while the first is open", async () => {
    const echo = await startEchoServer();
    const open = await TestClient.connect(ferry.port);
    try {
      open.write(
        `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nProxy-Authorization: ${basic("alice", "wonderland")}\r\n\r\n`,
      );
      assert.equal((await open.read(parseRawResponse, 15_000, "the first tunnel")).status, 200);
      const r = await viaProxy(ferry.port, `${target.origin}/second`, {
        headers: { "Proxy-Authorization": basic("alice", "wonderland") },
      });
      assert.equal(r.status, 429);
      assert.match(r.body, /sessionsPerUser/);
    } finally {
      open.destroy();
      await echo.close();
    }
  });
});

describe("HTTP proxy with only Kerberos offered", () => {
  test("HTTP clients get 403 saying to use SOCKS5 (Negotiate is not supported)", async () => {
    const gssapiOnly: AuthMethod = {
      name: "gssapi",
      code: 1,
      negotiate: () => Promise.reject(new Error("not used")),
    };
    const ferry = await startFerry({ rules: LOOPBACK_RULES }, {}, (ctx) => ({
      ...ctx,
      methods: [gssapiOnly],
    }));
    try {
      const r = await viaProxy(ferry.port, "http://127.0.0.1:9/");
      assert.equal(r.status, 403);
      assert.match(r.body, /Negotiate is not supported/);
      assert.equal(r.headers["proxy-authenticate"], undefined);
    } finally {
      await ferry.close();
    }
  });
});

describe("HTTP proxy bandwidth", () => {
  test("limits.bandwidth.perUser holds a forwarded download to the rate, and the bytes are whole", async () => {
    const web = await startHttpServer();
    const rate = 256 * 1024;
    const total = 768 * 1024;
    const ferry = await startFerry(
      { rules: LOOPBACK_RULES, limits: { bandwidth: { perUser: "256KiB/s" } } },
      { inlineUsers: [{ name: "alice", password: "wonderland" }] },
    );
    try {
      const started = performance.now();
      const r = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const req = http.get({
          host: "127.0.0.1",
          port: ferry.port,
          path: `${web.origin}/bytes/${total}`,
          headers: { "Proxy-Authorization": basic("alice", "wonderland") },
        });
        req.on("error", reject);
        req.on("response", (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          res.on("error", reject);
        });
      });
      const ms = performance.now() - started;
      assert.equal(r.status, 200);
      assert.equal(sha256(r.body), pseudoRandomSha256(total));
      // Only a floor: the bucket's burst may pass at once, the rest cannot come faster than the rate.
      const floorMs = ((total - new TokenBucket(rate).burst) / rate) * 1000 * 0.9;
      assert.ok(
        ms >= floorMs,
        `${total} bytes at ${rate} B/s came in ${Math.round(ms)} ms, under ${Math.round(floorMs)}`,
      );
    } finally {
      await ferry.close();
      await web.close();
    }
  });
});

describe("HTTP proxy session limits", () => {
  test("a connection refused its session slot (sessionsPerClient) gets 503 saying which limit", async () => {
    const echo = await startEchoServer();
    const ferry = await startFerry({ rules: LOOPBACK_RULES, limits: { sessionsPerClient: 1 } });
    // Both accepted while no session is established; the first to ask takes the one slot.
    const first = await TestClient.connect(ferry.port);
    const second = await TestClient.connect(ferry.port);
    try {
      first.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`);
      assert.equal((await first.read(parseRawResponse, 10_000, "the tunnel")).status, 200);
      second.write(`GET http://127.0.0.1:${echo.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
      const r = await second.read(parseRawResponse, 10_000, "the refusal");
      assert.equal(r.status, 503);
      assert.match(r.body, /session limit for 127\.0\.0\.1 reached \(1\)/);
    } finally {
      first.destroy();
      second.destroy();
      await ferry.close();
      await echo.close();
    }
  });
});
