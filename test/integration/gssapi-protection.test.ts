import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import type { Duplex } from "node:stream";
import { test } from "node:test";
import { loadGssapi } from "../../src/auth/gssapi-native.js";
import { connect as socksConnect } from "../../src/client/connect.js";
import { SocksError } from "../../src/client/errors.js";
import { StreamReader } from "../../src/io/reader.js";
import { addressOf } from "../../src/protocol/address.js";
import {
  decodeProtectionLevel,
  encodeGssMessage,
  encodeProtectionLevel,
  expectGssMessage,
  type ProtectionName,
} from "../../src/protocol/gssapi.js";
import {
  encodeGreeting,
  encodeReply,
  encodeRequest,
  Method,
  parseMethodSelection,
  parseRequest,
} from "../../src/protocol/socks5.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { FERRY_BIN } from "../helpers/ferry-process.js";
import { startScriptedGssProxy } from "../helpers/gssapi-server.js";
import { requireKerberos, startTestRealm, type TestRealm } from "../helpers/kdc.js";
import { sha256, startEchoServer, within } from "../helpers/net.js";
import { run } from "../helpers/process.js";

function gssapiFerry(realm: TestRealm, protection: ProtectionName[]): Promise<RunningFerry> {
  return startFerry({
    auth: ["gssapi"],
    gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection },
  });
}

/** Writes `data`, half-closes, and collects what comes back until the peer ends (bounded). */
async function roundTrip(stream: Duplex, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  const ended = once(stream, "end");
  stream.end(data);
  await within(ended, 30_000, "the echo's end");
  return Buffer.concat(chunks);
}

/** Resolves when the socket closes, with what it received (bounded). */
async function untilClosed(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  await within(once(socket, "close"), 15_000, "the server closing the connection");
  return Buffer.concat(chunks);
}

test("GSSAPI protection levels: the client's offer, and RFC 1961 §5 strictness", async (t) => {
  if (!requireKerberos(t)) return;
  const realm = await startTestRealm();
  const echo = await startEchoServer();
  t.after(async () => {
    await echo.close();
    await realm.stop();
  });
  const target = `127.0.0.1:${echo.port}`;
  const payload = Buffer.alloc(300_000, "ferry-protection ");

  await t.test("?protection= in the URL chooses what the client offers", async () => {
    const integrityOnly = await gssapiFerry(realm, ["integrity"]);
    const confidentialOnly = await gssapiFerry(realm, ["confidentiality"]);
    try {
      const url = (port: number, protection?: string) =>
        `socks5h://127.0.0.1:${port}?gssapi=rcmd%2Flocalhost${protection ? `&protection=${protection}` : ""}`;
      for (const [offer, expect] of [
        ["integrity", "integrity"],
        ["confidentiality,integrity", "integrity"],
        [undefined, "integrity"],
      ] as const) {
        const record = integrityOnly.nextRecord();
        const socket = await socksConnect(url(integrityOnly.port, offer), target);
        assert.equal(sha256(await roundTrip(socket, payload)), sha256(payload));
        assert.equal((await record).protection, expect, `offer ${offer ?? "(default)"}`);
      }
      // The proxy wants a level the client did not offer: the error says both.
      await assert.rejects(socksConnect(url(integrityOnly.port, "confidentiality"), target), (err: Error) => {
        assert.ok(err instanceof SocksError);
        assert.match(
          err.message,
          /the proxy wants protection "integrity", which this client does not accept \(asked for "confidentiality", accepting confidentiality; choose with \?protection=LEVEL\[,LEVEL\]/,
        );
        return true;
      });
      await assert.rejects(
        socksConnect(url(confidentialOnly.port, "none,integrity"), target),
        /wants protection "confidentiality".*asked for "none", accepting none, integrity/,
      );
    } finally {
      await integrityOnly.close();
      await confidentialOnly.close();
    }
  });

  await t.test(
    "a proxy that hangs up on the offered level: the error says what was offered (library and ferry connect)",
    async () => {
      // Like a server configured for integrity only that closes instead of answering.
      const proxy = await startScriptedGssProxy(realm.keytab, async (s) => {
        if (s.requested !== "integrity") {
          s.socket.destroy();
          return;
        }
        s.answer("integrity");
        await s.readData();
        s.socket.destroy();
      });
      try {
        const url = `socks5h://127.0.0.1:${proxy.port}?gssapi=rcmd%2Flocalhost`;
        const why =
          /the proxy hung up on the protection level this client offered \(asked for "confidentiality", accepting confidentiality, integrity; choose with \?protection=/;
        await assert.rejects(socksConnect(url, target), why);
        const cli = await run(process.execPath, [FERRY_BIN, "connect", "--proxy", url, "127.0.0.1", "9"], {
          env: realm.env,
          timeoutMs: 60_000,
        });
        assert.notEqual(cli.code, 0);
        assert.match(cli.stderr, why);
        assert.deepEqual(proxy.errors, []);
      } finally {
        await proxy.close();
      }
    },
  );

  await t.test("a proxy that aborts at the protection level: same, as a refusal", async () => {
    const proxy = await startScriptedGssProxy(realm.keytab, async (s) => {
      s.socket.end(encodeGssMessage({ type: "abort" }));
    });
    try {
      await assert.rejects(
        socksConnect(`socks5h://127.0.0.1:${proxy.port}?gssapi=rcmd%2Flocalhost&protection=none`, target),
        /the proxy refused the protection level this client offered \(asked for "none", accepting none;/,
      );
    } finally {
      await proxy.close();
    }
  });

  /**
   * A raw RFC 1961 client: establishes the context and agrees `level` with Ferry, then sends its
   * CONNECT request wrapped with conf_req_flag `conf`, whatever was agreed.
   */
  async function requestWrappedAs(ferry: RunningFerry, level: ProtectionName, conf: boolean) {
    const api = loadGssapi();
    const ctx = new api.Context("rcmd@localhost");
    const socket = net.connect({ host: "127.0.0.1", port: ferry.port });
    socket.on("error", () => {});
    await once(socket, "connect");
    const reader = new StreamReader(socket);
    try {
      socket.write(encodeGreeting({ methods: [Method.GSSAPI] }));
      assert.equal(await reader.read(parseMethodSelection), Method.GSSAPI);
      socket.write(encodeGssMessage({ type: "auth", token: await ctx.step() }));
      await ctx.step(await reader.read(expectGssMessage("auth")));
      assert.ok(ctx.complete);
      socket.write(
        encodeGssMessage({ type: "protection", token: ctx.wrap(encodeProtectionLevel(level), false) }),
      );
      const answer = ctx.unwrap(await reader.read(expectGssMessage("protection")));
      assert.equal(decodeProtectionLevel(answer.data), level);
      const request = encodeRequest({ command: "connect", address: addressOf("127.0.0.1", echo.port) });
      socket.write(encodeGssMessage({ type: "data", token: ctx.wrap(request, conf) }));
      const rest = reader.release();
      const after = await untilClosed(socket);
      return Buffer.concat([rest, after]);
    } finally {
      ctx.dispose();
      socket.destroy();
    }
  }

  for (const [level, conf, why] of [
    [
      "integrity",
      true,
      /GSSAPI: gss_unwrap: a token arrived encrypted, but integrity \(no encryption\) was agreed/,
    ],
    ["confidentiality", false, /GSSAPI: gss_unwrap: a token arrived without the agreed confidentiality/],
  ] as const) {
    await t.test(
      `Ferry's server at ${level} refuses a token wrapped with conf_req_flag ${conf}, and closes`,
      async () => {
        const ferry = await gssapiFerry(realm, [level]);
        try {
          const record = ferry.nextRecord();
          const received = await requestWrappedAs(ferry, level, conf);
          assert.equal(received.length, 0, "no reply: the request was not acted on");
          const r = await record;
          assert.match(r.reason ?? "", why);
          assert.equal(r.protection, level);
          assert.equal(r.target, undefined, "nothing was dialled");
        } finally {
          await ferry.close();
        }
      },
    );
  }

  await t.test(
    "Ferry's client keeps to the agreed level and refuses a reply wrapped at the other",
    async () => {
      const seen: { level: ProtectionName; confidential: boolean }[] = [];
      // Agrees the level asked for and records the request's conf_state; then answers with a
      // reply wrapped at the agreed level (and echoes), or, when `wrong`, at the other one.
      let wrong = false;
      const proxy = await startScriptedGssProxy(realm.keytab, async (s) => {
        s.answer(s.requested);
        const level = s.requested as "integrity" | "confidentiality";
        const request = await s.readData();
        seen.push({ level, confidential: request.confidential });
        assert.ok(parseRequest(request.data), "the request unwraps with plain gss_unwrap");
        const conf = level === "confidentiality";
        s.sendData(encodeReply(0, addressOf("127.0.0.1", 1)), wrong ? !conf : conf);
        if (wrong) return;
        // A plain-gss_wrap echo of everything that follows: the client's in-place frames must be
        // ordinary tokens, and ordinary tokens must unwrap in the client's frames.
        for (;;) {
          const m = await s.readData().catch(() => undefined);
          if (!m) break;
          assert.equal(m.confidential, conf);
          s.sendData(m.data, conf);
        }
        s.socket.end();
      });
      try {
        for (const level of ["integrity", "confidentiality"] as const) {
          const url = `socks5h://127.0.0.1:${proxy.port}?gssapi=rcmd%2Flocalhost&protection=${level}`;
          wrong = false;
          const socket = await socksConnect(url, target);
          assert.equal(sha256(await roundTrip(socket, payload)), sha256(payload), `${level}: echo intact`);
          wrong = true;
          await assert.rejects(
            socksConnect(url, target),
            level === "integrity"
              ? /a token arrived encrypted, but integrity \(no encryption\) was agreed/
              : /a token arrived without the agreed confidentiality/,
          );
        }
        assert.deepEqual(seen, [
          { level: "integrity", confidential: false },
          { level: "integrity", confidential: false },
          { level: "confidentiality", confidential: true },
          { level: "confidentiality", confidential: true },
        ]);
        assert.deepEqual(proxy.errors, []);
      } finally {
        await proxy.close();
      }
    },
  );
});
