import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { PassThrough } from "node:stream";
import { type TestContext, test } from "node:test";
import { type GssApi, type GssContext, loadGssapi } from "../../src/auth/gssapi-native.js";
import { GssEncapsulation, gssProtector } from "../../src/auth/gssapi-stream.js";
import { startFerry } from "../helpers/ferry.js";
import { gssapiConnect } from "../helpers/gssapi-client.js";
import { requireKerberos, startTestRealm, type TestRealm } from "../helpers/kdc.js";
import { startEchoServer, within } from "../helpers/net.js";

// Ferry seals and opens RFC 4121 Wrap tokens itself (native/gssapi/cfx.cc, OpenSSL) for the AES
// enctypes. These tests hold it to MIT's gss_wrap/gss_unwrap, in both directions, for each
// enctype, and check every refusal of its opener.

interface Enctype {
  number: number;
  name: string;
  /** The truncated HMAC of a token, bytes. */
  mac: number;
}

const ENCTYPES: Enctype[] = [
  { number: 17, name: "aes128-cts-hmac-sha1-96", mac: 12 },
  { number: 18, name: "aes256-cts-hmac-sha1-96", mac: 12 },
  { number: 19, name: "aes128-cts-hmac-sha256-128", mac: 16 },
  { number: 20, name: "aes256-cts-hmac-sha384-192", mac: 24 },
];

/** Header, confounder, header copy and MAC when sealed; header and checksum otherwise. */
function overhead(enc: Enctype, conf: boolean): number {
  return conf ? 16 + 16 + 16 + enc.mac : 16 + enc.mac;
}

// Around the AES block (CTS edges: the encrypted part is confounder + data + header copy), and
// large ones; the wrap size limit of each level is added where they are used.
const LENGTHS = [0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 1000, 65000];

type Sealing = "openssl" | "gss_wrap";

interface Pair {
  client: GssContext;
  server: GssContext;
}

/** An initiator and an acceptor, established in this process, each sealing as asked. */
function makePair(api: GssApi, realm: TestRealm, client: Sealing, server: Sealing): Pair {
  const option = (s: Sealing) => ({ sealing: s === "openssl" ? ("auto" as const) : ("gss_wrap" as const) });
  const c = new api.Context("rcmd@localhost", realm.ccache, option(client));
  const s = new api.Context(new api.Credential(realm.keytab, "rcmd/localhost"), option(server));
  const reply = s.stepSync(c.stepSync());
  c.stepSync(reply);
  assert.ok(c.complete && s.complete, "both sides established");
  assert.equal(c.sealing, client);
  assert.equal(s.sealing, server);
  return { client: c, server: s };
}

function dispose(...pairs: Pair[]): void {
  for (const p of pairs) {
    p.client.dispose();
    p.server.dispose();
  }
}

/** unwrap() must throw a "gss_unwrap: " error whose message matches `why`. */
function refused(receiver: GssContext, token: Buffer, why: RegExp, inOrder = true): void {
  assert.throws(
    () => receiver.unwrap(token, inOrder),
    (err: Error) => {
      assert.match(err.message, /^gss_unwrap: /);
      assert.match(err.message, why);
      return true;
    },
  );
}

function opens(receiver: GssContext, token: Buffer, data: Buffer, conf: boolean, inOrder = true): void {
  const out = receiver.unwrap(token, inOrder);
  assert.equal(out.confidential, conf);
  assert.ok(out.data.equals(data), `${data.length} bytes came back intact`);
}

/** The token with its body (after the 16-byte header) rotated right by k and RRC set to k. */
function rotated(token: Buffer, k: number): Buffer {
  const body = token.subarray(16);
  const r = k % body.length;
  const out = Buffer.concat([
    token.subarray(0, 16),
    body.subarray(body.length - r),
    body.subarray(0, body.length - r),
  ]);
  out.writeUInt16BE(k, 6);
  return out;
}

/** Splits back-to-back RFC 1961 data messages into their frames. */
function splitFrames(buf: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  for (let at = 0; at < buf.length; ) {
    const end = at + 4 + buf.readUInt16BE(at + 2);
    frames.push(buf.subarray(at, end));
    at = end;
  }
  return frames;
}

/** wrapFrames into one Buffer per message (each room for the largest), then those messages. */
async function wrapped(
  ctx: GssContext,
  data: Buffer | Buffer[],
  maxChunk: number,
  conf: boolean,
): Promise<Buffer[]> {
  const length = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.length;
  const outs = Array.from({ length: Math.ceil(length / maxChunk) }, () => Buffer.alloc(4 + 65535));
  const used = await ctx.wrapFrames(data, outs, maxChunk, conf);
  assert.equal(used.length, outs.length, "one message per piece");
  return used.map((n, i) => outs[i]!.subarray(0, n));
}

/** unwrapFrames over `run`, the plaintext pieces joined. */
async function unwrapped(ctx: GssContext, run: Buffer | Buffer[], conf: boolean): Promise<Buffer> {
  const list = Array.isArray(run) ? run : [run];
  const spans = await ctx.unwrapFrames(list, conf);
  const parts: Buffer[] = [];
  for (let i = 0; i < spans.length; i += 3)
    parts.push(list[spans[i]!]!.subarray(spans[i + 1]!, spans[i + 1]! + spans[i + 2]!));
  return Buffer.concat(parts);
}

/** `bytes` cut into Buffers of `size` bytes (the last shorter): messages split wherever reads would split them. */
function cut(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size));
  return out;
}

/**
 * wrapFrames then unwrapFrames, `data` given as pieces that do not line up with the frames, and
 * the messages handed to the receiver cut into Buffers of `readSize` bytes (split messages are
 * opened in scratch memory and their plaintext written back in place).
 */
async function framesThrough(
  sender: GssContext,
  receiver: GssContext,
  enc: Enctype,
  data: Buffer,
  maxChunk: number,
  conf: boolean,
  readSize = Number.MAX_SAFE_INTEGER,
): Promise<void> {
  const cuts = [0, 7, maxChunk + 3, Math.floor(data.length / 2), data.length].sort((a, b) => a - b);
  const pieces = cuts.slice(1).map((end, i) => data.subarray(cuts[i], end));
  const count = Math.ceil(data.length / maxChunk);
  const bytes = Buffer.concat(await wrapped(sender, pieces, maxChunk, conf));
  assert.equal(
    bytes.length,
    data.length + count * (4 + overhead(enc, conf)),
    "frame sizes as RFC 4121 lays them out",
  );
  assert.equal(splitFrames(bytes).length, count);
  const plain = await unwrapped(receiver, cut(bytes, readSize), conf);
  assert.ok(
    plain.equals(data),
    `${data.length} bytes in ${count} frames, read ${readSize} at a time, came back intact`,
  );
}

/** The session-key and ticket enctypes klist shows for the service ticket in the ccache. */
function serviceTicketEnctypes(realm: TestRealm): string {
  const r = spawnSync("klist", ["-e", "-c", realm.ccache], {
    env: realm.env,
    encoding: "utf8",
    timeout: 10_000,
  });
  assert.equal(r.status, 0, `klist -e: ${r.stderr}`);
  const m = /rcmd\/localhost@\S+\s*\n\s*Etype \(skey, tkt\): ([^\n]+)/.exec(r.stdout);
  assert.ok(m, `klist -e shows the service ticket: ${r.stdout}`);
  return m[1]!.trim();
}

async function sealingTests(t: TestContext, api: GssApi, enc: Enctype): Promise<void> {
  const realm = await startTestRealm({ enctypes: [enc.name] });
  t.after(() => realm.stop());

  await t.test("the context really uses this enctype, and seals with OpenSSL", () => {
    const pair = makePair(api, realm, "openssl", "openssl");
    const mit = makePair(api, realm, "gss_wrap", "gss_wrap");
    try {
      assert.equal(serviceTicketEnctypes(realm), `${enc.name}, ${enc.name}`);
      for (const conf of [true, false]) {
        for (const ctx of [pair.client, pair.server, mit.client, mit.server]) {
          // The same overhead from our code and from MIT's gss_wrap_size_limit.
          assert.equal(
            ctx.wrapSizeLimit(65535, conf),
            65535 - overhead(enc, conf),
            `${ctx.sealing} conf=${conf}`,
          );
        }
      }
    } finally {
      dispose(pair, mit);
    }
  });

  await t.test("byte-compatible with MIT both ways: wrap/unwrap, every length, both levels", () => {
    // Ours seal what MIT opens, MIT seals what ours open, from either side of the context.
    const oursInitiates = makePair(api, realm, "openssl", "gss_wrap");
    const mitInitiates = makePair(api, realm, "gss_wrap", "openssl");
    try {
      const routes: [string, GssContext, GssContext][] = [
        ["openssl initiator -> MIT acceptor", oursInitiates.client, oursInitiates.server],
        ["MIT acceptor -> openssl initiator", oursInitiates.server, oursInitiates.client],
        ["MIT initiator -> openssl acceptor", mitInitiates.client, mitInitiates.server],
        ["openssl acceptor -> MIT initiator", mitInitiates.server, mitInitiates.client],
      ];
      for (const conf of [true, false]) {
        const lengths = [...LENGTHS, 65535 - overhead(enc, conf)];
        const headers = new Map<string, string>();
        for (const [route, sender, receiver] of routes) {
          for (const n of lengths) {
            const data = randomBytes(n);
            const token = sender.wrap(data, conf);
            assert.equal(token.length, n + overhead(enc, conf), `${route}: token length for ${n} bytes`);
            // TOK_ID, flags, filler, EC, RRC: the same from both implementations, per direction.
            // (Read before unwrap: MIT's gss_unwrap works in the caller's buffer.)
            const side =
              sender === oursInitiates.client || sender === mitInitiates.client ? "initiator" : "acceptor";
            const header = token.subarray(0, 8).toString("hex");
            const seen = headers.get(side);
            if (seen === undefined) headers.set(side, header);
            else assert.equal(header, seen, `${route}: header as the other implementation writes it`);
            opens(receiver, token, data, conf);
          }
        }
      }
    } finally {
      dispose(oursInitiates, mitInitiates);
    }
  });

  await t.test(
    "byte-compatible with MIT both ways: wrapFrames/unwrapFrames, pieces split mid-frame",
    async () => {
      const oursInitiates = makePair(api, realm, "openssl", "gss_wrap");
      const mitInitiates = makePair(api, realm, "gss_wrap", "openssl");
      try {
        const routes: [GssContext, GssContext][] = [
          [oursInitiates.client, oursInitiates.server],
          [oursInitiates.server, oursInitiates.client],
          [mitInitiates.client, mitInitiates.server],
          [mitInitiates.server, mitInitiates.client],
        ];
        for (const conf of [true, false]) {
          const max = 65535 - overhead(enc, conf);
          for (const [sender, receiver] of routes) {
            await framesThrough(sender, receiver, enc, randomBytes(500), 33, conf);
            await framesThrough(sender, receiver, enc, randomBytes(2 * max + 1000), max, conf);
            // As a socket delivers them: 64 KiB reads (every message split), odd sizes, a byte at a time.
            for (const readSize of [65536, 4093, 17, 1])
              await framesThrough(sender, receiver, enc, randomBytes(2 * max + 1000), max, conf, readSize);
            // The stream and single tokens share the sequence: one more token after the frames.
            const data = randomBytes(17);
            opens(receiver, sender.wrap(data, conf), data, conf);
          }
        }
      } finally {
        dispose(oursInitiates, mitInitiates);
      }
    },
  );

  await t.test("a changed bit anywhere is refused, and the genuine token opens after", () => {
    const pair = makePair(api, realm, "openssl", "openssl");
    try {
      for (const [sender, receiver] of [
        [pair.client, pair.server],
        [pair.server, pair.client],
      ] as const) {
        for (const conf of [true, false]) {
          const data = randomBytes(40);
          const token = sender.wrap(data, conf);
          const len = token.length;
          const body = conf ? /does not verify \(altered/ : /checksum does not verify/;
          const flips: [number, number, RegExp][] = [
            [0, 0x01, /not an RFC 4121 wrap token/],
            [1, 0x80, /not an RFC 4121 wrap token/],
            [2, 0x01, /reflected back/],
            [2, 0x02, conf ? /checksum length is wrong/ : /too short/],
            [2, 0x04, body],
            [3, 0x01, /not an RFC 4121 wrap token/],
            [5, 0x01, conf ? /header differs from the copy sealed inside it/ : /checksum length is wrong/],
            [4, 0x80, conf ? /too short/ : /checksum length is wrong/],
            [7, 0x01, body], // RRC 1: the body is rotated back by one byte
            [8, 0x80, conf ? /header differs from the copy/ : body], // sequence number
            [15, 0x01, conf ? /header differs from the copy/ : body],
            [16, 0x01, body], // first byte of the body: confounder, or data
            [16 + 20, 0x10, body],
            [len - enc.mac - 16, 0x01, body], // sealed: the encrypted header copy
            [len - enc.mac - 1, 0x80, body],
            [len - enc.mac, 0x01, body], // the MAC or checksum
            [len - 1, 0x80, body],
          ];
          for (const [at, bit, why] of flips) {
            const forged = Buffer.from(token);
            forged[at]! ^= bit;
            refused(receiver, forged, why);
            refused(receiver, forged, why, false);
          }
          refused(receiver, token.subarray(0, len - 1), body);
          refused(receiver, token.subarray(0, 15), /not an RFC 4121 wrap token/);
          // None of those forgeries took this token's sequence number.
          opens(receiver, token, data, conf);
        }
      }
    } finally {
      dispose(pair);
    }
  });

  await t.test("stream order: replays, gaps and reordering refused; refusals do not advance", async () => {
    const pair = makePair(api, realm, "openssl", "openssl");
    try {
      for (const conf of [true, false]) {
        const data = Array.from({ length: 8 }, (_, i) => randomBytes(10 + i));
        const tokens = data.map((d) => pair.client.wrap(d, conf));
        opens(pair.server, tokens[0]!, data[0]!, conf);
        refused(pair.server, tokens[0]!, /a token arrived twice \(replayed\)/);
        refused(pair.server, tokens[2]!, /a token is missing before this one/);
        opens(pair.server, tokens[1]!, data[1]!, conf);
        opens(pair.server, tokens[2]!, data[2]!, conf);
        refused(pair.server, tokens[1]!, /replayed/);
        // 4 before 3: refused; then each in order.
        refused(pair.server, tokens[4]!, /missing before this one/);
        opens(pair.server, tokens[3]!, data[3]!, conf);
        opens(pair.server, tokens[4]!, data[4]!, conf);
        // One that never came, older than one that did (a datagram skipped it): refused on a stream.
        opens(pair.server, tokens[6]!, data[6]!, conf, false);
        refused(pair.server, tokens[5]!, /a token arrived after later ones/);
        opens(pair.server, tokens[7]!, data[7]!, conf);
      }
      // The same through unwrapFrames: three frames, the last two swapped.
      const [f0, f1, f2] = await wrapped(pair.server, randomBytes(90), 30, true);
      const swapped = Buffer.concat([f0!, f2!, f1!]);
      await assert.rejects(
        pair.client.unwrapFrames(swapped, true),
        /^Error: gss_unwrap: a token is missing before this one/,
      );
      // The first frame was taken; the second, then third, still open in order.
      assert.equal((await pair.client.unwrapFrames(Buffer.concat([f1!, f2!]), true)).length, 6);
      await assert.rejects(
        pair.client.unwrapFrames(Buffer.from(f2!), true),
        /gss_unwrap: a token arrived twice/,
      );
    } finally {
      dispose(pair);
    }
  });

  await t.test("reflected tokens and the wrong protection level are refused", async () => {
    const pair = makePair(api, realm, "openssl", "openssl");
    try {
      await assert.rejects(
        pair.server.unwrapFrames(await wrapped(pair.client, randomBytes(50), 100, true), false),
        /^Error: gss_unwrap: a token arrived encrypted, but integrity \(no encryption\) was agreed$/,
      );
      await assert.rejects(
        pair.server.unwrapFrames(await wrapped(pair.client, randomBytes(50), 100, false), true),
        /^Error: gss_unwrap: a token arrived without the agreed confidentiality$/,
      );
      const data = randomBytes(50);
      assert.ok(
        (await unwrapped(pair.server, await wrapped(pair.client, data, 100, true), true)).equals(data),
      );
      // Last: a reflected token takes a send sequence number the peer then never sees.
      for (const conf of [true, false]) {
        refused(
          pair.client,
          pair.client.wrap(randomBytes(20), conf),
          /sent the other way \(reflected back\)/,
        );
        refused(
          pair.server,
          pair.server.wrap(randomBytes(20), conf),
          /sent the other way \(reflected back\)/,
        );
      }
    } finally {
      dispose(pair);
    }
  });

  await t.test("datagrams: out of order accepted, duplicates and tokens 64 behind refused", () => {
    const pair = makePair(api, realm, "openssl", "openssl");
    try {
      for (const conf of [true, false]) {
        const data = Array.from({ length: 70 }, (_, i) => randomBytes(i));
        const tokens = data.map((d) => pair.server.wrap(d, conf));
        const open = (i: number) => opens(pair.client, tokens[i]!, data[i]!, conf, false);
        const refuse = (i: number, why: RegExp) => refused(pair.client, tokens[i]!, why, false);
        open(5);
        open(2);
        refuse(2, /a token arrived twice \(replayed\)/);
        open(3);
        const forged = Buffer.from(tokens[4]!);
        forged[forged.length - 1]! ^= 1;
        refused(pair.client, forged, /does not verify/, false);
        open(4);
        open(69);
        open(6); // 63 behind the newest, never seen: inside the window
        refuse(6, /replayed/);
        refuse(5, /a token arrived after later ones/); // 64 behind: outside the window
        refuse(1, /a token arrived after later ones/); // 68 behind, never seen
        open(68);
      }
    } finally {
      dispose(pair);
    }
  });

  await t.test(
    "a body rotated by a non-zero RRC opens (ours and MIT's), smaller or larger than the body",
    async () => {
      const ours = makePair(api, realm, "openssl", "openssl");
      const oursInitiates = makePair(api, realm, "openssl", "gss_wrap");
      const mitInitiates = makePair(api, realm, "gss_wrap", "openssl");
      try {
        const routes: [string, GssContext, GssContext][] = [
          ["openssl -> openssl", ours.client, ours.server],
          ["MIT -> openssl", mitInitiates.client, mitInitiates.server],
          // MIT opening our rotations: the test rotates the way RFC 4121 means.
          ["openssl -> MIT", oursInitiates.client, oursInitiates.server],
        ];
        for (const [route, sender, receiver] of routes) {
          for (const conf of [true, false]) {
            const bodyLength = 50 + overhead(enc, conf) - 16;
            for (const k of [1, 16, bodyLength - 1, bodyLength, bodyLength + 5, 3 * bodyLength + 7]) {
              const data = randomBytes(50);
              const token = rotated(sender.wrap(data, conf), k);
              assert.equal(token.length - 16, bodyLength);
              try {
                opens(receiver, token, data, conf);
                if (receiver.sealing === "openssl") {
                  // The stream's opener, in place: the same rotation undone inside a frame.
                  const next = randomBytes(50);
                  const tok = rotated(sender.wrap(next, conf), k);
                  const frames = Buffer.concat([
                    Buffer.from([1, 3, tok.length >> 8, tok.length & 0xff]),
                    tok,
                  ]);
                  assert.ok(
                    (await unwrapped(receiver, frames, conf)).equals(next),
                    "unwrapFrames undoes the rotation",
                  );
                }
              } catch (err) {
                throw new Error(`${route}, conf=${conf}, RRC ${k}: ${(err as Error).message}`);
              }
            }
          }
        }
      } finally {
        dispose(ours, oursInitiates, mitInitiates);
      }
    },
  );

  await t.test("an integrity token whose EC is not the checksum length is refused", () => {
    const pair = makePair(api, realm, "openssl", "openssl");
    try {
      const data = randomBytes(30);
      const token = pair.client.wrap(data, false);
      assert.equal(token.readUInt16BE(4), enc.mac, "EC holds the checksum length");
      for (const ec of [0, enc.mac - 1, enc.mac + 1, 0xffff]) {
        const forged = Buffer.from(token);
        forged.writeUInt16BE(ec, 4);
        refused(pair.server, forged, /the token's checksum length is wrong/);
      }
      opens(pair.server, token, data, false);
    } finally {
      dispose(pair);
    }
  });
  await t.test(
    "the stream reads messages however the reads cut them, dribbled a byte at a time too",
    async () => {
      for (const readSize of [1, 3, 4093, 4096, 65536, 70000]) {
        const pair = makePair(api, realm, "openssl", "openssl");
        const inner = new PassThrough();
        // The encapsulation disposes its context (the server's) when it ends.
        const stream = new GssEncapsulation(inner, gssProtector(pair.server, "confidentiality"));
        try {
          const max = pair.client.wrapSizeLimit(65535, true);
          const data = randomBytes(2 * max + 1000);
          const frames = Buffer.concat(await wrapped(pair.client, data, max, true));
          const got: Buffer[] = [];
          stream.on("data", (c: Buffer) => got.push(c));
          const ended = once(stream, "end");
          for (const piece of cut(frames, readSize)) inner.write(piece);
          inner.end();
          await within(ended, 20_000, `the stream's end with ${readSize}-byte reads`);
          assert.ok(
            Buffer.concat(got).equals(data),
            `${data.length} bytes intact, read ${readSize} at a time`,
          );
        } finally {
          stream.destroy();
          pair.client.dispose();
        }
      }
    },
  );
  await t.test("the stream refuses anything but a data message from its first two bytes", async () => {
    for (const [head, why] of [
      [[0x01, 0x01, 0xff, 0xff], /^GSSAPI: expected encapsulated data, got a GSSAPI auth message$/],
      [[0x01, 0x02, 0xff, 0xff], /^GSSAPI: expected encapsulated data, got a GSSAPI protection message$/],
      [[0x01, 0xff], /^GSSAPI: the peer aborted the GSSAPI session$/],
      [[0x05], /^GSSAPI: expected GSSAPI message version 1, got 5$/],
      [[0x01, 0x07], /^GSSAPI: unknown GSSAPI message type 7$/],
    ] as const) {
      const pair = makePair(api, realm, "openssl", "openssl");
      const inner = new PassThrough();
      const stream = new GssEncapsulation(inner, gssProtector(pair.server, "integrity"));
      try {
        const failed = once(stream, "error");
        // Only the head of a (65 KiB) message: the refusal must not wait for the rest.
        inner.write(Buffer.from(head));
        const [err] = (await within(failed, 5000, `the refusal of ${head}`)) as [Error];
        assert.match(err.message, why);
      } finally {
        stream.destroy();
        pair.client.dispose();
      }
    }
  });
  await t.test(
    "a real SOCKS session: the server's and the client's contexts both seal with OpenSSL",
    async () => {
      const echo = await startEchoServer();
      const ferry = await startFerry({
        auth: ["gssapi"],
        gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection: ["confidentiality"] },
      });
      // Every context made in this process: Ferry's acceptor and the client library's initiator.
      const made: GssContext[] = [];
      const Context = api.Context;
      api.Context = new Proxy(Context, {
        construct(target, args) {
          const ctx = Reflect.construct(target, args) as GssContext;
          made.push(ctx);
          return ctx;
        },
      });
      try {
        const conn = await gssapiConnect(
          ferry.port,
          { host: "127.0.0.1", port: echo.port },
          { service: "rcmd@localhost", protection: ["confidentiality"] },
        );
        assert.equal(conn.reply, 0);
        assert.equal(conn.protection, "confidentiality");
        assert.equal(made.length, 2, "one acceptor, one initiator");
        assert.deepEqual(
          made.map((c) => [c.complete, c.sealing]),
          [
            [true, "openssl"],
            [true, "openssl"],
          ],
        );
        const data = randomBytes(200_000);
        const chunks: Buffer[] = [];
        conn.stream.on("data", (c: Buffer) => chunks.push(c));
        const ended = once(conn.stream, "end");
        conn.stream.end(data);
        await within(ended, 20_000, "the echo's end");
        assert.ok(Buffer.concat(chunks).equals(data), "the echo came back intact");
      } finally {
        api.Context = Context;
        await ferry.close();
        await echo.close();
      }
    },
  );
}

test("RFC 4121 wrap tokens sealed with OpenSSL: MIT-compatible, every refusal", async (t) => {
  if (!requireKerberos(t)) return;
  const api = loadGssapi();
  for (const enc of ENCTYPES) {
    await t.test(`${enc.name} (enctype ${enc.number})`, (t) => sealingTests(t, api, enc));
  }
});
