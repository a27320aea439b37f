import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startEchoServer } from "../helpers/net.js";
import { assertEchoThrough, recordFor, socks5Failure, TestClient } from "../helpers/socks.js";

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");
const s4reject = hex("00 5b 0000 00000000");
const GREETING_NOAUTH = "05 01 00";
const NOAUTH_CHOSEN = hex("05 00");

interface Case {
  name: string;
  send: Buffer;
  /** Exactly the bytes the server must answer before it closes. */
  expect: Buffer;
  /** Half-close after sending: for inputs that are only wrong because they stop short. */
  end?: boolean;
  reason?: RegExp;
}

const noAuthCases: Case[] = [
  { name: "SOCKS5 greeting with NMETHODS 0", send: hex("05 00"), expect: hex("05 ff") },
  {
    name: "SOCKS5 greeting offering no method the server accepts",
    send: hex("05 02 02 80"),
    expect: hex("05 ff"),
    reason: /no acceptable authentication method/,
  },
  {
    name: "SOCKS5 request with the wrong version",
    send: hex(`${GREETING_NOAUTH} 04 01 00 01 7f000001 0050`),
    expect: Buffer.concat([NOAUTH_CHOSEN, socks5Failure(0x01)]),
  },
  {
    name: "SOCKS5 request with an unknown command",
    send: hex(`${GREETING_NOAUTH} 05 09 00 01 7f000001 0050`),
    expect: Buffer.concat([NOAUTH_CHOSEN, socks5Failure(0x07)]),
    reason: /unknown command/,
  },
  {
    name: "SOCKS5 request with a non-zero RSV",
    send: hex(`${GREETING_NOAUTH} 05 01 01 01 7f000001 0050`),
    expect: Buffer.concat([NOAUTH_CHOSEN, socks5Failure(0x01)]),
    reason: /reserved/,
  },
  {
    name: "SOCKS5 request with an unknown ATYP",
    send: hex(`${GREETING_NOAUTH} 05 01 00 02 7f000001 0050`),
    expect: Buffer.concat([NOAUTH_CHOSEN, socks5Failure(0x08)]),
    reason: /unknown address type/,
  },
  {
    name: "SOCKS5 request with a zero-length domain",
    send: hex(`${GREETING_NOAUTH} 05 01 00 03 00 0050`),
    expect: Buffer.concat([NOAUTH_CHOSEN, socks5Failure(0x01)]),
    reason: /empty domain/,
  },
  {
    name: "SOCKS5 request cut short by the client's FIN",
    send: hex(`${GREETING_NOAUTH} 05 01 00 01 7f00`),
    expect: NOAUTH_CHOSEN,
    end: true,
    reason: /closed/,
  },
  { name: "SOCKS4 request with an unknown command", send: hex("04 03 0050 7f000001 00"), expect: s4reject },
  {
    name: "SOCKS4 USERID over 255 bytes without NUL",
    send: Buffer.concat([hex("04 01 0050 7f000001"), Buffer.alloc(300, 0x75)]),
    expect: s4reject,
    reason: /USERID is longer than 255/,
  },
  {
    name: "SOCKS4a hostname over 255 bytes without NUL",
    send: Buffer.concat([hex("04 01 0050 00000001 00"), Buffer.alloc(300, 0x68)]),
    expect: s4reject,
    reason: /hostname is longer than 255/,
  },
  {
    name: "SOCKS4a with an empty hostname",
    send: hex("04 01 0050 00000001 00 00"),
    expect: s4reject,
    reason: /empty SOCKS4a hostname/,
  },
  {
    name: "a first byte that is neither 4 nor 5",
    send: hex("16 03 01 00 a5"),
    expect: Buffer.alloc(0),
    reason: /^unsupported protocol version 22 from 127\.0\.0\.1$/,
  },
];

const userPassCases: Case[] = [
  {
    name: "RFC 1929 request with the wrong version",
    send: hex("05 01 02 05 01 75 01 70"),
    expect: hex("05 02 01 01"),
    reason: /version 1, got 5/,
  },
  {
    name: "RFC 1929 request with an empty username",
    send: hex("05 01 02 01 00 01 70"),
    expect: hex("05 02 01 01"),
    reason: /empty username/,
  },
  {
    name: "RFC 1929 request with an empty password",
    send: hex("05 01 02 01 01 75 00"),
    expect: hex("05 02 01 01"),
    reason: /empty password/,
  },
  {
    name: "SOCKS5 greeting offering only no-auth to a server that requires a login",
    send: hex("05 01 00"),
    expect: hex("05 ff"),
  },
];

async function runCases(ferry: () => RunningFerry, echoPort: () => number, cases: Case[], login = {}) {
  for (const c of cases) {
    test(`${c.name}: answered ${c.expect.length ? c.expect.toString("hex") : "with nothing"} and closed`, async () => {
      const f = ferry();
      const client = await TestClient.connect(f.port);
      try {
        client.write(c.send);
        if (c.end) client.socket.end();
        const { data, ended } = await client.readToEnd();
        assert.equal(data.toString("hex"), c.expect.toString("hex"));
        assert.ok(ended, "the server must close the connection");
      } finally {
        client.destroy();
      }
      const record = await recordFor(f, client.localPort);
      assert.notEqual(record.reason, undefined, "the record says why the session ended");
      if (c.reason) assert.match(record.reason!, c.reason);
      // The server keeps serving other clients.
      await assertEchoThrough(f.port, echoPort(), login);
    });
  }
}

describe("malformed input to a server without authentication", () => {
  let ferry: RunningFerry;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
    ferry = await startFerry();
  });
  after(async () => {
    await ferry?.close();
    await echo?.close();
  });
  runCases(
    () => ferry,
    () => echo.port,
    noAuthCases,
  );
});

describe("malformed input to a server that requires a login", () => {
  let ferry: RunningFerry;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
    ferry = await startFerry({}, { inlineUsers: [{ name: "alice", password: "wonderland" }] });
  });
  after(async () => {
    await ferry?.close();
    await echo?.close();
  });
  runCases(
    () => ferry,
    () => echo.port,
    userPassCases,
    { user: "alice", password: "wonderland" },
  );
});
