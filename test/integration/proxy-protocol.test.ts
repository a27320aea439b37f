import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { LoginEvent } from "../../src/auth/login-guard.js";
import { loadConfig } from "../../src/config/load.js";
import type { FileConfig } from "../../src/config/schema.js";
import { encodeProxyV1, encodeProxyV2, type ProxyEndpoints } from "../../src/protocol/proxy-protocol.js";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
} from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { buildContext } from "../../src/server/build-context.js";
import type { RefusedConnection } from "../../src/server/server.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { sleep, startEchoServer, waitFor } from "../helpers/net.js";
import { freePort } from "../helpers/process.js";
import { recordFor, TestClient } from "../helpers/socks.js";

// The balancer is 127.0.0.1; the clients it speaks for are other loopback addresses.
const BALANCER = "127.0.0.1";

function endpoints(client: string, clientPort: number, ferry: RunningFerry): ProxyEndpoints {
  return {
    family: "ipv4",
    sourceAddress: client,
    sourcePort: clientPort,
    destinationAddress: ferry.host,
    destinationPort: ferry.port,
  };
}

const greeting = encodeGreeting({ methods: [0] });

/** Sends `preamble` from `from`, then a CONNECT to the echo server; returns the client once echoed. */
async function sessionThrough(
  ferry: RunningFerry,
  echoPort: number,
  preamble: Buffer | Buffer[],
  from = BALANCER,
): Promise<TestClient> {
  const c = await TestClient.connect(ferry.port, ferry.host, from);
  // In pieces, with pauses: the header must be reassembled across reads.
  for (const piece of Array.isArray(preamble) ? preamble : [preamble]) {
    c.write(piece);
    if (Array.isArray(preamble)) await sleep(15);
  }
  c.write(greeting);
  assert.equal(await c.read(parseMethodSelection), 0);
  c.write(
    encodeRequest({ command: "connect", address: { type: "ipv4", host: "127.0.0.1", port: echoPort } }),
  );
  assert.equal((await c.read(parseReply)).reply, 0, "CONNECT through the PROXY listener succeeds");
  c.write("ping");
  assert.equal((await c.readBytes(4)).toString(), "ping");
  return c;
}

/** Connects from `from`, sends `bytes`, and expects the connection closed without a byte. */
async function refusedWith(ferry: RunningFerry, bytes: Buffer, from = BALANCER): Promise<number> {
  const c = await TestClient.connect(ferry.port, ferry.host, from);
  try {
    if (bytes.length > 0) c.write(bytes);
    const { data, ended } = await c.readToEnd();
    assert.equal(data.length, 0, "a refused connection gets no reply");
    assert.ok(ended, "a refused connection is closed");
    return c.localPort;
  } finally {
    c.destroy();
  }
}

async function start(proxyProtocol: object, extra: Partial<FileConfig> = {}) {
  const ferry = await startFerry({
    listen: [{ address: "127.0.0.1:0", proxyProtocol } as never],
    // Rules by client address, which only hold if the header's address is the one used.
    clients: [{ deny: { from: ["127.0.0.2"] } }, { allow: { from: ["127.0.0.0/8"] } }],
    ...extra,
  });
  const refused: RefusedConnection[] = [];
  ferry.server.on("refused", (r) => refused.push(r));
  return { ferry, refused };
}

describe("PROXY protocol listener", () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
  });
  after(async () => {
    await echo.close();
  });

  test("the header's client is the session's client: rules, record, in v2 and v1, whole or in pieces", async () => {
    const { ferry, refused } = await start({ from: ["127.0.0.1/32"] });
    try {
      const v2 = await sessionThrough(ferry, echo.port, encodeProxyV2(endpoints("127.0.0.3", 40001, ferry)));
      v2.destroy();
      const r2 = await recordFor(ferry, 40001);
      assert.equal(r2.client, "127.0.0.3");
      assert.equal(r2.proxy, `${BALANCER}:${v2.localPort}`);
      assert.equal(r2.reply, 0);

      const v1 = encodeProxyV1(endpoints("127.0.0.3", 40002, ferry));
      const pieces = [v1.subarray(0, 3), v1.subarray(3, 20), v1.subarray(20)];
      (await sessionThrough(ferry, echo.port, pieces)).destroy();
      assert.equal((await recordFor(ferry, 40002)).client, "127.0.0.3");

      const v2bytes = encodeProxyV2(endpoints("127.0.0.3", 40003, ferry), Buffer.from("0100026832", "hex"));
      const v2pieces = [
        v2bytes.subarray(0, 5),
        v2bytes.subarray(5, 15),
        v2bytes.subarray(15, 22),
        v2bytes.subarray(22),
      ];
      (await sessionThrough(ferry, echo.port, v2pieces)).destroy();
      assert.equal((await recordFor(ferry, 40003)).client, "127.0.0.3");

      // The same balancer, speaking for a client the rules deny.
      await refusedWith(
        ferry,
        Buffer.concat([encodeProxyV2(endpoints("127.0.0.2", 40004, ferry)), greeting]),
      );
      await waitFor(() => refused.length === 1, 5000, "the refusal");
      assert.equal(refused[0]!.client, "127.0.0.2");
      assert.equal(refused[0]!.clientPort, 40004);
      assert.match(refused[0]!.reason, /client refused by rule/);
      assert.match(refused[0]!.proxy ?? "", /^127\.0\.0\.1:\d+$/);
    } finally {
      await ferry.close();
    }
  });

  test("a listed source must send a header; a silent one is closed after the header timeout", async () => {
    const { ferry, refused } = await start({ from: ["127.0.0.1/32"] }, { timeouts: { handshake: "400ms" } });
    try {
      await refusedWith(ferry, greeting);
      await waitFor(() => refused.length === 1, 5000, "the refusal");
      assert.match(
        refused[0]!.reason,
        /bad PROXY header from 127\.0\.0\.1: expected a PROXY protocol header/,
      );
      await refusedWith(ferry, Buffer.from("PROXY TCP4 127.0.0.3 127.0.0.1 1 2\n"));
      await waitFor(() => refused.length === 2, 5000, "the refusal");
      assert.match(refused[1]!.reason, /CRLF/);
      await refusedWith(ferry, Buffer.alloc(0));
      await waitFor(() => refused.length === 3, 5000, "the refusal");
      assert.equal(refused[2]!.reason, "no PROXY header within 400 ms");
      assert.equal(ferry.records.length, 0, "no session began");
      assert.equal(ferry.server.handshaking, 0);
    } finally {
      await ferry.close();
    }
  });

  test("other sources are refused at once; with allowDirect they are served, but not with a header", async () => {
    const closed = await start({ from: ["127.0.0.1/32"] });
    try {
      await refusedWith(closed.ferry, greeting, "127.0.0.5");
      await waitFor(() => closed.refused.length === 1, 5000, "the refusal");
      assert.equal(closed.refused[0]!.client, "127.0.0.5");
      assert.match(closed.refused[0]!.reason, /not a PROXY protocol source/);
    } finally {
      await closed.ferry.close();
    }
    const { ferry, refused } = await start({ from: ["127.0.0.1/32"], allowDirect: true });
    try {
      const direct = await sessionThrough(ferry, echo.port, [], "127.0.0.5");
      direct.destroy();
      const r = await recordFor(ferry, direct.localPort);
      assert.equal(r.client, "127.0.0.5");
      assert.equal(r.proxy, undefined);
      // A forgery, in either version, naming an address the rules would let through.
      for (const forged of [
        encodeProxyV2(endpoints("127.0.0.3", 1, ferry)),
        encodeProxyV1(endpoints("127.0.0.3", 1, ferry)),
      ]) {
        await refusedWith(ferry, Buffer.concat([forged, greeting]), "127.0.0.5");
      }
      await waitFor(() => refused.length === 2, 5000, "the refusals");
      for (const r of refused) {
        assert.equal(r.client, "127.0.0.5");
        assert.match(r.reason, /PROXY header from a source not in proxyProtocol\.from/);
      }
      // Direct clients keep their rules: 127.0.0.2 is denied as itself.
      await refusedWith(ferry, greeting, "127.0.0.2");
      await waitFor(() => refused.length === 3, 5000, "the refusal");
      assert.match(refused[2]!.reason, /client refused by rule/);
    } finally {
      await ferry.close();
    }
  });

  test("LOCAL, UNKNOWN and non-IP headers are the balancer's own connections", async () => {
    const { ferry } = await start({ from: ["127.0.0.1/32"] });
    try {
      const unix = Buffer.concat([
        Buffer.from("0d0a0d0a000d0a515549540a213100d8", "hex"),
        Buffer.alloc(216, 0x2f),
      ]);
      for (const header of [encodeProxyV2(), Buffer.from("PROXY UNKNOWN\r\n"), unix]) {
        const c = await sessionThrough(ferry, echo.port, header);
        c.destroy();
        const r = await recordFor(ferry, c.localPort);
        assert.equal(r.client, BALANCER);
        assert.equal(r.proxy, undefined);
      }
    } finally {
      await ferry.close();
    }
  });

  test("per-client session limits count the header's client, not the balancer", async () => {
    const { ferry, refused } = await start({ from: ["127.0.0.1/32"] }, { limits: { sessionsPerClient: 1 } });
    try {
      const first = await sessionThrough(
        ferry,
        echo.port,
        encodeProxyV2(endpoints("127.0.0.3", 41001, ferry)),
      );
      // Another client behind the same balancer is not held back by the first.
      const other = await sessionThrough(
        ferry,
        echo.port,
        encodeProxyV2(endpoints("127.0.0.4", 41002, ferry)),
      );
      // The same client again is, though it comes from the same balancer connection address.
      await refusedWith(
        ferry,
        Buffer.concat([encodeProxyV2(endpoints("127.0.0.3", 41003, ferry)), greeting]),
      );
      await waitFor(() => refused.length === 1, 5000, "the refusal");
      assert.match(refused[0]!.reason, /session limit for 127\.0\.0\.3 reached \(1\)/);
      first.destroy();
      other.destroy();
    } finally {
      await ferry.close();
    }
  });

  test("failed logins are remembered for the header's client, not the balancer", async () => {
    const users = { inlineUsers: [{ name: "ann", password: "right" }] };
    const f = await startFerry(
      {
        listen: [{ address: "127.0.0.1:0", proxyProtocol: { from: ["127.0.0.1/32"] } } as never],
        clients: [{ allow: { from: ["127.0.0.0/8"] } }],
      },
      users,
    );
    const logins: LoginEvent[] = [];
    f.context.state.logins.on("login", (e) => logins.push(e));
    try {
      for (const [client, password] of [
        ["127.0.0.3", "wrong"],
        ["127.0.0.3", "wrong"],
        ["127.0.0.4", "right"],
      ] as const) {
        const c = await TestClient.connect(f.port, f.host);
        c.write(encodeProxyV2(endpoints(client, 43000, f)));
        c.write(encodeGreeting({ methods: [2] }));
        assert.equal(await c.read(parseMethodSelection), 2);
        c.write(encodeUserPassRequest({ username: "ann", password }));
        assert.equal((await c.read(parseUserPassReply, 30_000)).ok, password === "right");
        c.destroy();
      }
      assert.deepEqual(
        logins.map((e) => [e.client, e.ok, e.failures]),
        [
          ["127.0.0.3", false, 1],
          ["127.0.0.3", false, 2],
          // Another client behind the same balancer starts clean.
          ["127.0.0.4", true, 0],
        ],
      );
    } finally {
      await f.close();
    }
  });

  test("a reload that turns proxyProtocol on for a listening address applies to the next connection", async () => {
    // A fixed port: listeners are matched to entries by the address as configured.
    const ferry = await startFerry({ listen: [`127.0.0.1:${await freePort()}`] });
    try {
      const before = await sessionThrough(ferry, echo.port, []);
      before.destroy();
      const address = `${ferry.host}:${ferry.port}`;
      const config = await loadConfig({
        overrides: { listen: [{ address, proxyProtocol: { from: ["127.0.0.1/32"] } } as never] },
      });
      ferry.server.update(await buildContext(config));
      const refused: RefusedConnection[] = [];
      ferry.server.on("refused", (r) => refused.push(r));
      await refusedWith(ferry, greeting);
      await waitFor(() => refused.length === 1, 5000, "the refusal");
      assert.match(refused[0]!.reason, /bad PROXY header/);
      const after = await sessionThrough(
        ferry,
        echo.port,
        encodeProxyV1(endpoints("127.0.0.3", 42001, ferry)),
      );
      after.destroy();
      assert.equal((await recordFor(ferry, 42001)).client, "127.0.0.3");
    } finally {
      await ferry.close();
    }
  });

  test("a listener without proxyProtocol takes nothing from a header", async () => {
    const ferry = await startFerry({});
    try {
      await refusedWith(ferry, Buffer.concat([encodeProxyV2(endpoints("127.0.0.3", 1, ferry)), greeting]));
      await waitFor(() => ferry.records.length === 1, 5000, "the record");
      assert.equal(ferry.records[0]!.client, BALANCER);
      assert.equal(ferry.records[0]!.protocol, "unknown");
    } finally {
      await ferry.close();
    }
  });
});
