import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { test } from "node:test";
import { connect as socksConnect } from "../../src/client/connect.js";
import { parseProxyUrl } from "../../src/client/proxy.js";
import type { ProtectionName } from "../../src/protocol/gssapi.js";
import { type DanteEnctype, startDante } from "../helpers/dante.js";
import { requireDanteGssapi } from "../helpers/dante-gssapi.js";
import { startFerry } from "../helpers/ferry.js";
import { requireKerberos, startTestRealm } from "../helpers/kdc.js";
import { sha256, startEchoServer, waitFor } from "../helpers/net.js";
import { LOOPBACK_ONLY } from "../helpers/probed-ferry.js";
import { describeRun, run, tempDir } from "../helpers/process.js";
import { startTap } from "../helpers/tap.js";
import { requireTool } from "../helpers/tools.js";

/** RFC 1961 level 0 is Dante's "clear" and Ferry's "none". */
const danteName: Record<ProtectionName, DanteEnctype> = {
  none: "clear",
  integrity: "integrity",
  confidentiality: "confidentiality",
};
const LEVELS: ProtectionName[] = ["none", "integrity", "confidentiality"];

/** 3 MiB, so each direction spans about 50 RFC 1961 tokens, with a marker to look for on the wire. */
const MARKER = "FERRY-DANTE-PLAINTEXT-MARKER";
const payload = Buffer.concat([
  Buffer.from(`${MARKER}\n`),
  randomBytes(3 * 1024 * 1024),
  Buffer.from(MARKER),
]);

/** What a tap between client and proxy saw: plaintext or not, framed or not, as the level says. */
function assertWire(level: ProtectionName, up: Buffer, down: Buffer): void {
  if (level === "confidentiality") {
    assert.equal(up.includes(MARKER), false, "confidentiality: no plaintext client → proxy");
    assert.equal(down.includes(MARKER), false, "confidentiality: no plaintext proxy → client");
  } else {
    assert.equal(up.includes(MARKER), true, `${level}: the payload is readable on the wire`);
    assert.equal(down.includes(MARKER), true);
  }
  if (level === "none") {
    // Level 0: after the handshake the payload travels as it is, both ways.
    assert.equal(up.subarray(up.length - payload.length).equals(payload), true);
    assert.equal(down.subarray(down.length - payload.length).equals(payload), true);
  } else {
    // Protected: RFC 1961 data messages (01 03 LEN TOKEN), so more bytes than the payload.
    const framing = 4 * Math.ceil(payload.length / 65_535);
    assert.ok(up.length > payload.length + framing, `${up.length} bytes up`);
    assert.ok(down.length > payload.length + framing, `${down.length} bytes down`);
  }
}

/** Writes `data`, half-closes, and collects what comes back until the peer ends (bounded). */
async function roundTrip(stream: Duplex, data: Buffer, timeoutMs = 60_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  const ended = once(stream, "end");
  stream.resume();
  stream.end(data);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      ended,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no end within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks);
}

test("GSSAPI interop with Dante (built with GSSAPI) against a real Kerberos realm", {
  timeout: 600_000,
}, async (t) => {
  if (!requireKerberos(t)) return;
  const dante = requireDanteGssapi(t);
  if (!dante || !requireTool(t, "socat", "socat")) return;
  const realm = await startTestRealm();
  const echo = await startEchoServer();
  const dir = await tempDir("ferry-dante-gssapi-");
  t.after(async () => {
    await echo.close();
    await realm.stop();
    await dir.remove();
  });
  const principal = `${realm.user}@${realm.realm}`;

  /** socat under Dante's socksify, through Ferry accepting `accepts`, asking for `asks`. */
  const danteClient = async (accepts: ProtectionName[], asks: ProtectionName, agreed: ProtectionName) => {
    const ferry = await startFerry({
      ...LOOPBACK_ONLY,
      auth: ["gssapi"],
      gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection: accepts },
    });
    const tap = await startTap(ferry.port);
    try {
      // Dante's client asks for `rcmd@<the proxy's name>`; 127.0.0.1 is localhost in /etc/hosts.
      const conf = join(dir.path, `socks-${ferry.port}.conf`);
      await writeFile(
        conf,
        [
          "route {",
          `  from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = ${tap.port}`,
          "  proxyprotocol: socks_v5",
          "  method: gssapi",
          "  gssapi.servicename: rcmd",
          `  gssapi.enctype: ${danteName[asks]}`,
          "}",
          "",
        ].join("\n"),
      );
      const record = ferry.nextRecord();
      // socat sends stdin to the echo target, half-closes at EOF, and writes what comes back.
      const r = await run(
        dante.socksify,
        ["socat", "-t", "60", "-T", "120", "STDIO", `TCP:127.0.0.1:${echo.port}`],
        {
          input: payload,
          // Without SOCKS_AUTOADD_LANROUTES=no Dante's client goes direct to local networks.
          env: { ...realm.env, SOCKS_CONF: conf, SOCKS_AUTOADD_LANROUTES: "no" },
          timeoutMs: 180_000,
          maxBuffer: payload.length + 1024,
        },
      );
      const s = await record;
      assert.equal(r.code, 0, `${describeRun(r)}; Ferry: ${s.reason ?? "no reason"}`);
      assert.equal(r.stdoutBytes, payload.length, describeRun(r));
      assert.equal(r.stdoutSha256, sha256(payload), "the echo came back byte for byte");
      assert.equal(s.method, "gssapi");
      assert.equal(s.user, principal);
      assert.equal(s.protection, agreed, "Ferry's record says which level was agreed");
      assert.equal(s.target, `127.0.0.1:${echo.port}`);
      assert.equal(s.bytesUp, payload.length);
      assert.equal(s.bytesDown, payload.length);
      assertWire(agreed, tap.up(), tap.down());
    } finally {
      await tap.close();
      await ferry.close();
    }
  };

  for (const level of LEVELS) {
    await t.test(`Dante's client (socksify socat) through Ferry's server at "${level}"`, () =>
      danteClient([level], level, level),
    );
  }

  await t.test(
    "Dante's client asking for integrity from a Ferry that prefers confidentiality gets integrity",
    // Told "confidentiality", Dante's client does not hang up (RFC 1961 §4.4) but carries on at
    // integrity, and Ferry drops the session at the first message without confidentiality.
    () => danteClient(["confidentiality", "integrity"], "integrity", "integrity"),
  );

  for (const level of LEVELS) {
    await t.test(`Ferry's client through Dante's server (sockd) at "${level}"`, async () => {
      const sockd = await startDante({
        command: dante.sockd,
        env: realm.env,
        gssapi: { keytab: realm.keytab, service: "rcmd/localhost", enctype: [danteName[level]] },
        to: "127.0.0.0/8",
        commands: ["connect"],
      });
      const tap = await startTap(sockd.port);
      try {
        const hop = {
          ...parseProxyUrl(`socks5h://127.0.0.1:${tap.port}`),
          gssapi: { service: "rcmd@localhost", protection: [level] },
        };
        const socket = await socksConnect(hop, `127.0.0.1:${echo.port}`);
        const back = await roundTrip(socket, payload);
        assert.equal(back.length, payload.length);
        assert.equal(sha256(back), sha256(payload), "the echo came back byte for byte");
        assertWire(level, tap.up(), tap.down());
        // Dante's line for the finished session: the level it agreed, the principal, and the bytes
        // it relayed to and from the target (its client-side counts are of wrapped bytes).
        const who = `gssapi/${danteName[level]}%${principal.replace(/\./g, "\\.")}@127\\.0\\.0\\.1\\.\\d+`;
        const n = payload.length;
        const line = new RegExp(
          `tcp/connect \\]: \\d+ -> ${who} .* -> \\d+, ${n} -> 127\\.0\\.0\\.1\\.\\d+ 127\\.0\\.0\\.1\\.${echo.port} -> ${n}:`,
        );
        await waitFor(() => line.test(sockd.output()), 10_000, "Dante's session line").catch(() => {
          const logged = sockd.output().match(/^.*tcp\/connect.*$/gm) ?? [];
          assert.fail(`Dante logged no line matching ${line}; it logged:\n${logged.join("\n")}`);
        });
      } finally {
        await tap.close();
        await sockd.stop();
      }
    });
  }
});
