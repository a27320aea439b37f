import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import type tls from "node:tls";
import { fetch } from "undici";
import { connect } from "../../src/client/connect.js";
import { SocksError } from "../../src/client/errors.js";
import { loadConfig } from "../../src/config/load.js";
import type { FileConfig } from "../../src/config/schema.js";
import { SocksAgent, SocksDispatcher } from "../../src/index.js";
import { readIntoOwnBuffers } from "../../src/io/read-into.js";
import type { SessionRecord } from "../../src/server/context.js";
import { makePki, type TestPki } from "../helpers/certs.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { FERRY_BIN } from "../helpers/ferry-process.js";
import { pseudoRandomSha256, startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { sha256, startEchoServer, waitFor, within } from "../helpers/net.js";
import { describeRun, run } from "../helpers/process.js";
import { TestClient } from "../helpers/socks.js";
import { echoThrough } from "../helpers/targets.js";

type Echo = Awaited<ReturnType<typeof startEchoServer>>;

/** The TLS listener's URL for Ferry's own client. */
function tlsUrl(ferry: RunningFerry, params: string, scheme = "socks5h+tls"): string {
  return `${scheme}://127.0.0.1:${ferry.port}${params ? `?${params}` : ""}`;
}

/** The next session record that satisfies `match` (records of probes and failures come first). */
async function recordWhere(
  ferry: RunningFerry,
  match: (r: SessionRecord) => boolean,
): Promise<SessionRecord> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const found = ferry.records.find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no such record; records: ${JSON.stringify(ferry.records)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function rejects(promise: Promise<unknown>): Promise<SocksError> {
  const err = await within(
    promise.then(
      (s) => {
        // Got through where it should not: close it, so the failure below ends the test.
        (s as net.Socket | undefined)?.destroy?.();
        return undefined;
      },
      (e: unknown) => e,
    ),
    15_000,
    "client failure",
  );
  assert.ok(err instanceof SocksError, `expected a SocksError, got ${String(err)}`);
  return err;
}

describe("TLS listener: SOCKS5 inside TLS", () => {
  let pki: TestPki;
  let echo: Echo;
  let ferry: RunningFerry;
  let ca: string;

  before(async () => {
    pki = await makePki();
    echo = await startEchoServer();
    const server = await pki.issue("server", "localhost");
    ca = `ca=${pki.ca.cert}`;
    ferry = await startFerry({ listen: [{ address: "127.0.0.1:0", tls: server }] });
  });
  after(async () => {
    await ferry?.close();
    await echo?.close();
    await pki?.remove();
  });

  test("Ferry's client relays 4 MiB each way byte-exact over the TLS listener (the relay's fallback path)", async () => {
    const payload = randomBytes(4 * 1024 * 1024);
    const socket = await connect(tlsUrl(ferry, ca), `127.0.0.1:${echo.port}`);
    assert.equal((socket as tls.TLSSocket).getProtocol?.(), "TLSv1.3");
    // The relay's zero-copy reads are for plain sockets: a TLS socket declines (and is unchanged).
    const spare = Buffer.alloc(16);
    assert.equal(
      readIntoOwnBuffers(
        socket,
        spare,
        () => {},
        () => spare,
      ),
      false,
    );
    const back = await echoThrough(socket, payload);
    assert.equal(back.length, payload.length);
    assert.equal(sha256(back), sha256(payload));
    const r = await recordWhere(ferry, (x) => x.command === "connect");
    assert.equal(r.tls, "TLSv1.3");
    assert.equal(r.protocol, "socks5");
    assert.equal(r.replyName, "succeeded");
    assert.equal(r.bytesUp, payload.length);
    assert.equal(r.bytesDown, payload.length);
  });

  test("a plain SOCKS client on the TLS port fails the handshake; the record says so", async () => {
    const socket = await connect(`socks4a://127.0.0.1:${ferry.port}`, `localhost:${echo.port}`).catch(
      (e: unknown) => e,
    );
    // Plain SOCKS to the TLS port is not TLS: the server fails the handshake and keeps serving.
    assert.ok(socket instanceof SocksError, "a plain client must not get through a TLS listener");
    const r = await recordWhere(ferry, (x) => /TLS handshake failed/.test(x.reason ?? ""));
    assert.match(
      r.reason!,
      /TLS handshake failed: .*(wrong version number|http request|unknown protocol|record)/i,
    );
  });

  test("a client that does not trust the certificate gets a clear error; the server records the failed handshake and keeps serving", async () => {
    const before = ferry.records.length;
    const err = await rejects(connect(tlsUrl(ferry, ""), `127.0.0.1:${echo.port}`));
    assert.equal(err.stage, "tls");
    assert.equal(err.code, "ESOCKS_TLS");
    assert.match(
      err.message,
      /proxy #1 \(socks5h\+tls:\/\/127\.0\.0\.1:\d+\): TLS handshake failed: the proxy's certificate is not trusted: .*\((UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\); give its CA with ca=FILE/,
    );
    const r = await recordWhere(ferry, (x) => ferry.records.indexOf(x) >= before);
    assert.match(
      r.reason ?? "",
      /^TLS handshake failed: .*(unknown ca|certificate unknown|may not trust this server's certificate)/i,
    );
    assert.equal(r.command, undefined);

    // A name the certificate does not list.
    const other = await rejects(
      connect(
        `socks5h+tls://127.0.0.1:${ferry.port}?${ca}&servername=proxy.example`,
        `127.0.0.1:${echo.port}`,
      ),
    );
    assert.match(
      other.message,
      /does not name this host: .*proxy\.example.*; connect by a name it lists or set servername=NAME/,
    );

    // Still serving.
    const socket = await connect(tlsUrl(ferry, ca), `127.0.0.1:${echo.port}`);
    assert.equal((await echoThrough(socket, Buffer.from("still here"))).toString(), "still here");
  });
});

describe("TLS proxies in the agents, the undici dispatcher and ferry run", () => {
  let pki: TestPki;
  let web: TestHttpServer;
  let ferry: RunningFerry;
  let url: string;

  before(async () => {
    pki = await makePki();
    web = await startHttpServer();
    ferry = await startFerry({
      listen: [{ address: "127.0.0.1:0", tls: await pki.issue("server", "localhost") }],
      timeouts: { handshake: "400ms" },
    });
    url = `socks5h+tls://localhost:${ferry.port}?ca=${pki.ca.cert}`;
  });
  after(async () => {
    await ferry?.close();
    await web?.close();
    await pki?.remove();
  });

  test("SocksAgent: http.get through socks5h+tls://", async () => {
    const agent = new SocksAgent(url);
    try {
      const body = await new Promise<string>((resolve, reject) =>
        http
          .get(`http://localhost:${web.port}/`, { agent }, (res) => {
            let b = "";
            res.on("data", (c) => {
              b += c;
            });
            res.on("end", () => resolve(b));
          })
          .on("error", reject),
      );
      assert.equal(body, web.greeting);
    } finally {
      agent.destroy();
    }
    const r = await recordWhere(ferry, (x) => x.target === `localhost:${web.port}`);
    assert.equal(r.tls, "TLSv1.3");
  });

  test("SocksDispatcher: undici fetch through socks5h+tls://, 1 MB intact", async () => {
    const dispatcher = new SocksDispatcher(url);
    try {
      const res = await fetch(`http://localhost:${web.port}/bytes/1000000`, { dispatcher });
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(sha256(body), pseudoRandomSha256(1_000_000));
    } finally {
      await dispatcher.close();
    }
  });

  test("ferry run: a Node program's fetch goes through socks5h+tls://", async () => {
    const before = ferry.records.length;
    const r = await run(
      FERRY_BIN,
      [
        "run",
        "--proxy",
        url,
        "--",
        process.execPath,
        "-e",
        `fetch("http://localhost:${web.port}/").then(r => r.text()).then(t => process.stdout.write(t))`,
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), web.greeting);
    assert.ok(
      ferry.records.slice(before).some((x) => x.target === `localhost:${web.port}` && x.tls === "TLSv1.3"),
    );
  });

  test("the TLS handshake counts toward timeouts.handshake: a client that opens and sends nothing is closed", async () => {
    const before = ferry.records.length;
    const idle = await TestClient.connect(ferry.port);
    await waitFor(() => idle.ended || idle.closed, 10_000, "the server to close the silent connection");
    const r = await recordWhere(ferry, (x) => ferry.records.indexOf(x) >= before);
    assert.equal(r.reason, "handshake not finished within 400 ms");
    // Half a ClientHello, then silence: the same.
    const half = await TestClient.connect(ferry.port);
    half.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    await waitFor(() => half.ended || half.closed, 10_000, "the server to close the stalled handshake");
    const r2 = await recordWhere(ferry, (x) => ferry.records.indexOf(x) > ferry.records.indexOf(r));
    assert.equal(r2.reason, "handshake not finished within 400 ms");
    idle.socket.destroy();
    half.socket.destroy();
  });
});

describe("TLS listener: client certificates", () => {
  let pki: TestPki;
  let echo: Echo;
  let required: RunningFerry;
  let optional: RunningFerry;
  let ca: string;
  let alice: string;
  let bob: string;
  let mallory: string;

  before(async () => {
    pki = await makePki();
    echo = await startEchoServer();
    const server = await pki.issue("server", "localhost");
    const a = await pki.issue("alice");
    const b = await pki.issue("bob");
    const m = await pki.selfSigned("mallory", "alice");
    ca = `ca=${pki.ca.cert}`;
    alice = `${ca}&cert=${a.cert}&key=${a.key}`;
    bob = `${ca}&cert=${b.cert}&key=${b.key}`;
    mallory = `${ca}&cert=${m.cert}&key=${m.key}`;
    const rules: FileConfig["rules"] = [
      { allow: { users: ["alice"], methods: ["tls-cert"] } },
      { deny: { users: ["bob"] } },
      { allow: { users: ["carol"], methods: ["userpass"] } },
    ];
    required = await startFerry({
      listen: [
        { address: "127.0.0.1:0", tls: { ...server, clientCa: pki.ca.cert, requireClientCert: true } },
      ],
      rules,
    });
    optional = await startFerry(
      { listen: [{ address: "127.0.0.1:0", tls: { ...server, clientCa: pki.ca.cert } }], rules },
      { inlineUsers: [{ name: "carol", password: "pw" }] },
    );
  });
  after(async () => {
    await required?.close();
    await optional?.close();
    await echo?.close();
    await pki?.remove();
  });

  test("a verified certificate is the session's user: allowed by a rule for that user", async () => {
    const socket = await connect(tlsUrl(required, alice), `127.0.0.1:${echo.port}`);
    assert.equal((await echoThrough(socket, Buffer.from("hello alice"))).toString(), "hello alice");
    const r = await recordWhere(required, (x) => x.user === "alice");
    assert.equal(r.method, "tls-cert");
    assert.equal(r.rule, "rules[0]");
    assert.equal(r.replyName, "succeeded");
  });

  test("another user's certificate meets that user's rules: bob is refused", async () => {
    const err = await rejects(connect(tlsUrl(required, bob), `127.0.0.1:${echo.port}`));
    assert.equal(err.stage, "request");
    assert.equal(err.reply, 0x02);
    const r = await recordWhere(required, (x) => x.user === "bob");
    assert.equal(r.method, "tls-cert");
    assert.equal(r.rule, "rules[1]");
  });

  test("no certificate where one is required: refused in the handshake, with a clear error on both sides", async () => {
    const before = required.records.length;
    const err = await rejects(connect(tlsUrl(required, ca), `127.0.0.1:${echo.port}`));
    assert.equal(err.stage, "tls");
    assert.match(
      err.message,
      /TLS refused after the handshake: the proxy requires a client certificate .*; give cert=FILE and key=FILE/,
    );
    const r = await recordWhere(required, (x) => required.records.indexOf(x) >= before);
    assert.match(r.reason ?? "", /^TLS handshake failed: peer did not return a certificate/);
  });

  test("a certificate from another issuer is refused, even with a known name", async () => {
    const before = optional.records.length;
    await rejects(connect(tlsUrl(optional, mallory), `127.0.0.1:${echo.port}`));
    const r = await recordWhere(optional, (x) => optional.records.indexOf(x) >= before);
    assert.match(r.reason ?? "", /^TLS: client certificate CN=alice refused: DEPTH_ZERO_SELF_SIGNED_CERT/);
    assert.equal(r.user, undefined);
  });

  test("where certificates are optional, a client without one logs in with a password as usual", async () => {
    const socket = await connect(
      `socks5h+tls://carol:pw@127.0.0.1:${optional.port}?${ca}`,
      `127.0.0.1:${echo.port}`,
    );
    assert.equal((await echoThrough(socket, Buffer.from("carol"))).toString(), "carol");
    const r = await recordWhere(optional, (x) => x.user === "carol");
    assert.equal(r.method, "userpass");
    // And a certificate still counts there, with no password asked.
    const s2 = await connect(tlsUrl(optional, alice), `127.0.0.1:${echo.port}`);
    assert.equal((await echoThrough(s2, Buffer.from("a"))).toString(), "a");
    const r2 = await recordWhere(optional, (x) => x.user === "alice");
    assert.equal(r2.method, "tls-cert");
  });
});

describe("TLS listener configuration", () => {
  test("a non-loopback TLS listener without a login needs allowOpenProxy; one that requires client certificates does not", async () => {
    const pki = await makePki();
    try {
      const server = await pki.issue("server", "localhost");
      await assert.rejects(
        startFerry({ listen: [{ address: "0.0.0.0:0", tls: server }] }),
        /refusing to listen on 0\.0\.0\.0:0 without authentication/,
      );
      const ferry = await startFerry({
        listen: [
          { address: "0.0.0.0:0", tls: { ...server, clientCa: pki.ca.cert, requireClientCert: true } },
        ],
      });
      await ferry.close();
    } finally {
      await pki.remove();
    }
  });

  test("listen entries: problems named at their keys, the string form as before", async () => {
    const problem = async (listen: unknown[]): Promise<string> =>
      (await loadConfig({ overrides: { listen } as Partial<FileConfig> }).then(
        () => "",
        (e: Error) => e.message,
      )) as string;
    assert.equal(
      await problem([{ address: "127.0.0.1:1", tls: { cert: "a", key: "b", requireClientCert: true } }]),
      "command line: listen.0.tls.requireClientCert: requireClientCert needs clientCa: the CA file client certificates are checked against",
    );
    assert.equal(
      await problem([{ address: "127.0.0.1:1", tls: { cert: "a", key: "b", clientCA: "c" } }]),
      'command line: listen.0.tls.clientCA: unknown key (did you mean "clientCa"?)',
    );
    assert.equal(
      await problem(["127.0.0.1:1", { adress: "x" }]),
      'command line: listen.1.address: Invalid input: expected string, received undefined\ncommand line: listen.1.adress: unknown key (did you mean "address"?)',
    );
    assert.match(await problem(["nope"]), /^command line: listen\.0: "nope" is not HOST:PORT/);
  });

  test("a key that does not match the certificate is refused at start, naming the files", async () => {
    const pki = await makePki();
    try {
      const a = await pki.issue("a");
      const b = await pki.issue("b");
      await assert.rejects(
        startFerry({ listen: [{ address: "127.0.0.1:0", tls: { cert: a.cert, key: b.key } }] }),
        (err: Error) => {
          assert.match(
            err.message,
            /listen 127\.0\.0\.1:0: tls: cannot use .*a\.pem with .*b\.key: .*key values mismatch/,
          );
          return true;
        },
      );
    } finally {
      await pki.remove();
    }
  });

  test("plain and TLS listeners side by side", async () => {
    const pki = await makePki();
    const echo = await startEchoServer();
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const server = await pki.issue("server", "localhost");
    const ferry = await startFerry({
      listen: [`127.0.0.1:${port}`, { address: "127.0.0.1:0", tls: server }],
    });
    try {
      const tlsPort = ferry.server.listening[1]!.port;
      const plain = await connect(`socks5h://127.0.0.1:${port}`, `127.0.0.1:${echo.port}`);
      assert.equal((await echoThrough(plain, Buffer.from("plain"))).toString(), "plain");
      const secure = await connect(
        `socks5h+tls://127.0.0.1:${tlsPort}?ca=${pki.ca.cert}`,
        `127.0.0.1:${echo.port}`,
      );
      assert.equal((await echoThrough(secure, Buffer.from("secure"))).toString(), "secure");
      const kinds = ferry.records.filter((r) => r.command === "connect").map((r) => r.tls ?? "plain");
      assert.deepEqual(kinds.sort(), ["TLSv1.3", "plain"]);
    } finally {
      await ferry.close();
      await echo.close();
      await pki.remove();
    }
  });
});
