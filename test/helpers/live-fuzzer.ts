/**
 * The live fuzzer: mutated SOCKS handshakes, requests, RFC 1929 and RFC 1961 (GSSAPI) messages,
 * SOCKS4 requests, HTTP and noise, sent to a running `ferry serve`, plus mutated datagrams to a
 * UDP association's relay. Every input is made from (seed, input number) alone, so a failure
 * names the pair that replays it. Fails on: a crash, a hang (a connection neither answered with
 * success nor closed within the handshake timeout and a slack), an honest probe that does not get
 * through, a datagram probe unanswered, traffic the probe refused outside loopback, and fds not
 * back near their baseline at the end.
 */
import dgram from "node:dgram";
import net from "node:net";
import { GSSAPI_NOT_BUILT, gssapiAvailable, loadGssapi } from "../../src/auth/gssapi-native.js";
import { addressOf, type SocksAddress } from "../../src/protocol/address.js";
import { encodeGssMessage } from "../../src/protocol/gssapi.js";
import { encodeSocks4Request } from "../../src/protocol/socks4.js";
import { encodeGreeting, encodeRequest } from "../../src/protocol/socks5.js";
import { encodeUdpDatagram } from "../../src/protocol/udp.js";
import { encodeUserPassRequest } from "../../src/protocol/userpass.js";
import { startTestRealm } from "./kdc.js";
import { mutate, type Rng, rngFor } from "./mutate.js";
import { startEchoServer } from "./net.js";
import { type ProbedFerry, startProbedFerry } from "./probed-ferry.js";
import { hasTool } from "./tools.js";
import { startUdpEcho } from "./udp.js";

export interface FuzzTargets {
  /** TCP echo server on 127.0.0.1. */
  echoPort: number;
  /** UDP echo server on 127.0.0.1. */
  udpEchoPort: number;
}

export interface FuzzOptions {
  seed: number;
  durationMs: number;
  /** Inputs in flight at once. */
  concurrency?: number;
  /** An honest CONNECT after every this many inputs. */
  probeEvery?: number;
  /** The server's handshake timeout: a connection must be closed (or have succeeded) by then. */
  handshakeMs: number;
  /** Added to handshakeMs before a silent open connection counts as a hang (a loaded machine stalls). */
  slackMs?: number;
  /** The RFC 1929 user the server knows. */
  user: { name: string; password: string };
  /** Makes a fresh GSS-API initial token (AP-REQ) for the server's service; absent: random tokens. */
  gssToken?: () => Buffer;
  /** Fraction of inputs that are datagrams to an association's relay. */
  udpShare?: number;
  log?: (line: string) => void;
}

export interface FuzzReport {
  seed: number;
  inputs: number;
  byKind: Record<string, number>;
  /** How the server ended each TCP input: closed, success (a reply 0 / 90, an HTTP answer), hang. */
  endings: Record<string, number>;
  datagrams: number;
  probes: number;
  udpProbes: number;
  fdBaseline: number;
  fdAfter: number;
  failures: string[];
}

type Kind = "socks5" | "userpass" | "socks4" | "gssapi" | "http" | "noise";
const KINDS: readonly Kind[] = [
  "socks5",
  "socks5",
  "userpass",
  "userpass",
  "socks4",
  "gssapi",
  "gssapi",
  "http",
  "noise",
];

const hex = (b: Buffer): string => b.subarray(0, 256).toString("hex") + (b.length > 256 ? "…" : "");

/** A request target the rules admit (the echo server) or a nearby one they may refuse. */
function target(rng: Rng, t: FuzzTargets): SocksAddress {
  switch (rng.int(5)) {
    case 0:
      return addressOf("localhost", t.echoPort);
    case 1:
      return addressOf("::1", t.echoPort);
    case 2:
      return addressOf("10.0.0.1", t.echoPort); // denied by the rules: never dialled
    default:
      return addressOf("127.0.0.1", t.echoPort);
  }
}

function command(rng: Rng): "connect" | "bind" | "udp" {
  return rng.pick(["connect", "connect", "connect", "bind", "udp"] as const);
}

/** The honest input of a kind, as the parts a client sends in turn. */
function honest(kind: Kind, rng: Rng, t: FuzzTargets, o: FuzzOptions): Buffer[] {
  const request = () => encodeRequest({ command: command(rng), address: target(rng, t) });
  switch (kind) {
    case "socks5":
      return [encodeGreeting({ methods: rng.chance(0.8) ? [0] : [0, 2, 1] }), request()];
    case "userpass": {
      const password = rng.chance(0.5) ? o.user.password : `${o.user.password}x`;
      const name = rng.chance(0.9) ? o.user.name : "nobody";
      return [
        encodeGreeting({ methods: [2] }),
        encodeUserPassRequest({ username: name, password }),
        request(),
      ];
    }
    case "socks4": {
      const c = rng.chance(0.8) ? "connect" : "bind";
      const a = rng.chance(0.5) ? addressOf("127.0.0.1", t.echoPort) : addressOf("localhost", t.echoPort);
      return [encodeSocks4Request({ command: c, address: a, userId: rng.chance(0.5) ? "fuzz" : "" })];
    }
    case "gssapi": {
      const token = o.gssToken && rng.chance(0.7) ? o.gssToken() : randomToken(rng);
      const parts = [encodeGreeting({ methods: [1] }), encodeGssMessage({ type: "auth", token })];
      // What follows a context: the protection-level message (garbage here: no real context).
      if (rng.chance(0.5))
        parts.push(encodeGssMessage({ type: "protection", token: rng.bytes(rng.int(80)) }));
      if (rng.chance(0.2)) parts.push(encodeGssMessage({ type: "abort" }));
      return parts;
    }
    case "http":
      return [Buffer.from(`CONNECT 127.0.0.1:${t.echoPort} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)];
    default:
      return [
        Buffer.concat([Buffer.from([rng.pick([4, 5, 5, 0x47, rng.int(256)])]), rng.bytes(rng.int(64))]),
      ];
  }
}

/** Something shaped like a Kerberos token (an ASN.1 application tag) or plain noise. */
function randomToken(rng: Rng): Buffer {
  const body = rng.bytes(rng.int(rng.chance(0.1) ? 4000 : 300));
  return rng.chance(0.6)
    ? Buffer.concat([Buffer.from([0x60, 0x82, body.length >> 8, body.length & 0xff]), body])
    : body;
}

/** Mutates one part, several, or the whole; then cuts the result into the writes to send. */
function mutated(rng: Rng, parts: Buffer[]): { writes: Buffer[]; how: string } {
  let out: Buffer[];
  let how: string;
  if (rng.chance(0.4)) {
    const m = mutate(rng, Buffer.concat(parts));
    out = [m.bytes];
    how = `whole: ${m.how.join(", ")}`;
  } else {
    const i = rng.int(parts.length);
    const m = mutate(rng, parts[i]!);
    out = parts.slice(0, i).concat([m.bytes], rng.chance(0.7) ? parts.slice(i + 1) : []);
    how = `part ${i}: ${m.how.join(", ")}`;
  }
  // Sometimes byte by byte-ish, to hit the parsers' "need more" paths across reads.
  const all = Buffer.concat(out);
  if (rng.chance(0.2) && all.length > 1) {
    const writes: Buffer[] = [];
    for (let at = 0; at < all.length; ) {
      const n = 1 + rng.int(8);
      writes.push(all.subarray(at, at + n));
      at += n;
    }
    return { writes, how: `${how}; split in ${writes.length}` };
  }
  return { writes: out, how };
}

/** Whether the server's bytes end in a granted request, after which an open connection is right. */
export function looksLikeSuccess(got: Buffer): boolean {
  if (got.length >= 8 && got[0] === 0 && got[1] === 90) return true; // SOCKS4 granted
  // The HTTP proxy answered (a CONNECT tunnel, or a status on a connection kept alive for the
  // next request, as HTTP/1.1 keeps it): an answer, not a hang.
  if (/^HTTP\/1\.[01] \d{3} [^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n/.test(got.toString("latin1"))) return true;
  if (got[0] !== 5 || got.length < 2) return false;
  let at = 2;
  if (got[1] === 2) {
    if (got[2] !== 1 || got[3] !== 0) return false; // RFC 1929 failure or nothing yet
    at = 4;
  } else if (got[1] !== 0) return false;
  return got[at] === 5 && got[at + 1] === 0;
}

/** One TCP input: connect, write, then wait for the server to close or to grant the request. */
async function tcpInput(
  port: number,
  localAddress: string,
  writes: Buffer[],
  limitMs: number,
): Promise<"closed" | "success" | "hang" | "connect-failed"> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (how: "closed" | "success" | "hang" | "connect-failed"): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(how);
    };
    const timer = setTimeout(
      () => finish(looksLikeSuccess(Buffer.concat(chunks)) ? "success" : "hang"),
      limitMs,
    );
    socket.on("error", () => finish(socket.connecting ? "connect-failed" : "closed"));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => finish("closed"));
    socket.on("close", () => finish("closed"));
    socket.once("connect", () => {
      const next = (i: number): void => {
        if (i >= writes.length || settled) return;
        socket.write(writes[i]!);
        if (i + 1 < writes.length) setTimeout(() => next(i + 1), 1);
      };
      next(0);
    });
  });
}

/** One complete honest CONNECT with an echo; resolves with an error text or undefined. */
export async function honestConnect(
  port: number,
  echoPort: number,
  timeoutMs = 15_000,
): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    const payload = Buffer.from(`honest probe ${Date.now()}`);
    let got = Buffer.alloc(0);
    let stage = 0;
    const done = (err?: string): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(err);
    };
    const timer = setTimeout(
      () => done(`no answer within ${timeoutMs} ms (stage ${stage}, got ${hex(got)})`),
      timeoutMs,
    );
    socket.on("error", (e) =>
      done(`error ${(e as NodeJS.ErrnoException).code ?? e.message} at stage ${stage}`),
    );
    socket.on("close", () => done(`closed at stage ${stage} after ${hex(got)}`));
    socket.once("connect", () => socket.write(Buffer.from([5, 1, 0])));
    socket.on("data", (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (stage === 0 && got.length >= 2) {
        if (got[0] !== 5 || got[1] !== 0) return done(`method selection ${hex(got)}`);
        got = got.subarray(2);
        stage = 1;
        socket.write(encodeRequest({ command: "connect", address: addressOf("127.0.0.1", echoPort) }));
      }
      if (stage === 1 && got.length >= 10) {
        if (got[0] !== 5 || got[1] !== 0) return done(`CONNECT reply ${hex(got)}`);
        got = got.subarray(10);
        stage = 2;
        socket.write(payload);
      }
      if (stage === 2 && got.length >= payload.length) {
        if (!got.subarray(0, payload.length).equals(payload)) return done(`echo ${hex(got)}`);
        socket.removeAllListeners("close");
        done();
      }
    });
  });
}

/** An association for the datagram fuzz: its control connection, its relay port, its socket. */
interface Association {
  control: net.Socket;
  relayPort: number;
  udp: dgram.Socket;
  replies: Buffer[];
  closed: boolean;
}

async function openAssociation(port: number): Promise<Association> {
  const control = net.connect({ host: "127.0.0.1", port });
  control.on("error", () => {});
  let got = Buffer.alloc(0);
  const reply = await new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no UDP ASSOCIATE reply within 15 s")), 15_000);
    control.once("connect", () =>
      control.write(
        Buffer.concat([
          encodeGreeting({ methods: [0] }),
          encodeRequest({ command: "udp", address: addressOf("0.0.0.0", 0) }),
        ]),
      ),
    );
    control.on("data", (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length >= 12) {
        clearTimeout(timer);
        resolve(got.subarray(2, 12));
      }
    });
    control.once("close", () => reject(new Error(`control connection closed: ${hex(got)}`)));
  });
  if (reply[1] !== 0 || reply[3] !== 1) throw new Error(`UDP ASSOCIATE reply ${hex(reply)}`);
  const udp = dgram.createSocket("udp4");
  udp.on("error", () => {});
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
  const a: Association = { control, relayPort: reply.readUInt16BE(8), udp, replies: [], closed: false };
  udp.on("message", (m) => {
    if (a.replies.length < 1000) a.replies.push(m);
  });
  control.removeAllListeners("close");
  control.on("close", () => {
    a.closed = true;
  });
  return a;
}

/** Sends an honest datagram through `a` until its echo comes back (datagrams may be lost). */
async function udpProbe(
  a: Association,
  udpEchoPort: number,
  timeoutMs = 10_000,
): Promise<string | undefined> {
  const payload = Buffer.from(`udp probe ${Date.now()} ${Math.random()}`);
  const datagram = encodeUdpDatagram({
    frag: 0,
    address: addressOf("127.0.0.1", udpEchoPort),
    data: payload,
  });
  // Only what comes back from now on: the list is bounded, and fuzzed datagrams are echoed too.
  a.replies.length = 0;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    a.udp.send(datagram, a.relayPort, "127.0.0.1");
    const until = Math.min(deadline, Date.now() + 500);
    while (Date.now() < until) {
      if (a.replies.some((r) => r.subarray(r.length - payload.length).equals(payload))) return undefined;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  return `no echo of an honest datagram within ${timeoutMs} ms${a.closed ? " (the association was closed)" : ""}`;
}

/**
 * Runs the fuzz against `server` for `durationMs`. Resolves with the report; `failures` empty
 * means the server held.
 */
export async function runLiveFuzz(server: ProbedFerry, t: FuzzTargets, o: FuzzOptions): Promise<FuzzReport> {
  const log = o.log ?? (() => {});
  const concurrency = o.concurrency ?? 32;
  const probeEvery = o.probeEvery ?? 50;
  const slack = o.slackMs ?? 8000;
  const udpShare = o.udpShare ?? 0.15;
  const failures: string[] = [];
  const byKind: Record<string, number> = {};
  const endings: Record<string, number> = {};
  const fail = (what: string): void => {
    if (failures.length < 50) failures.push(what);
    log(`FAIL ${what}`);
  };

  // Warm-up: one of each path the fuzz takes, so the fd baseline has the bcrypt worker, the
  // GSS-API library's files and a UDP relay's first socket in it already.
  const warm = await honestConnect(server.port, t.echoPort);
  if (warm) fail(`warm-up CONNECT: ${warm}`);
  await tcpInput(
    server.port,
    "127.0.0.1",
    [
      encodeGreeting({ methods: [2] }),
      encodeUserPassRequest({ username: o.user.name, password: o.user.password }),
    ],
    1000,
  );
  if (o.gssToken) {
    await tcpInput(
      server.port,
      "127.0.0.1",
      [encodeGreeting({ methods: [1] }), encodeGssMessage({ type: "auth", token: o.gssToken() })],
      1000,
    );
  }
  const associations = [await openAssociation(server.port), await openAssociation(server.port)];
  for (const a of associations) {
    const err = await udpProbe(a, t.udpEchoPort);
    if (err) fail(`warm-up datagram: ${err}`);
  }
  await new Promise((r) => setTimeout(r, 500));
  const fdBaseline = server.fds();
  log(`seed ${o.seed}: fd baseline ${fdBaseline}; fuzzing for ${Math.round(o.durationMs / 1000)} s`);

  const stopAt = Date.now() + o.durationMs;
  let next = 0;
  let datagrams = 0;
  let probes = 0;
  let udpProbes = 0;
  let crashed = false;
  const datagramsPerProbe = 50;

  const one = async (index: number): Promise<void> => {
    const rng = rngFor(o.seed, index);
    if (rng.chance(udpShare)) {
      const a = associations[rng.int(associations.length)]!;
      const base = encodeUdpDatagram({
        frag: rng.chance(0.9) ? 0 : rng.int(256),
        address: rng.chance(0.8)
          ? addressOf("127.0.0.1", t.udpEchoPort)
          : addressOf("localhost", t.udpEchoPort),
        data: rng.bytes(rng.int(200)),
      });
      const m = mutate(rng, base);
      byKind.udp = (byKind.udp ?? 0) + 1;
      datagrams++;
      if (m.bytes.length > 0) a.udp.send(m.bytes, a.relayPort, "127.0.0.1");
      if (datagrams % datagramsPerProbe === 0) {
        udpProbes++;
        const err = await udpProbe(a, t.udpEchoPort);
        if (err) fail(`datagram probe after input ${index}: ${err}`);
      }
      return;
    }
    const kind = rng.pick(KINDS);
    byKind[kind] = (byKind[kind] ?? 0) + 1;
    const { writes, how } = mutated(rng, honest(kind, rng, t, o));
    // Logins from many addresses, so the guard's per-address line (32) is not what refuses them.
    const from = kind === "userpass" ? `127.0.1.${1 + (index % 200)}` : "127.0.0.1";
    const started = Date.now();
    const ending = await tcpInput(server.port, from, writes, o.handshakeMs + slack);
    endings[ending] = (endings[ending] ?? 0) + 1;
    if (ending === "hang" || ending === "connect-failed") {
      fail(
        `${ending}: seed ${o.seed} input ${index} (${kind}, ${how}) from ${from}, open ${Date.now() - started} ms: ${hex(Buffer.concat(writes))}`,
      );
    }
  };

  const worker = async (): Promise<void> => {
    while (Date.now() < stopAt && failures.length < 20 && !crashed) {
      const index = next++;
      if (index > 0 && index % probeEvery === 0) {
        probes++;
        const err = await honestConnect(server.port, t.echoPort);
        if (err) fail(`honest CONNECT after input ${index}: ${err}`);
      }
      await one(index);
      if (!server.alive()) {
        crashed = true;
        fail(`ferry exited during input ${index} (seed ${o.seed}): ${server.ferry.output().slice(-3000)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));

  if (!crashed) {
    // The associations must still work after all that, then go away cleanly.
    for (const a of associations) {
      const err = await udpProbe(a, t.udpEchoPort);
      if (err) fail(`datagram probe at the end: ${err}`);
    }
    const last = await honestConnect(server.port, t.echoPort);
    if (last) fail(`honest CONNECT at the end: ${last}`);
  }
  for (const a of associations) {
    a.control.destroy();
    a.udp.close();
  }
  // Every session is over now; the server's fds must come back to (near) the baseline.
  const margin = 6;
  let fdAfter = server.fds();
  const deadline = Date.now() + 30_000;
  while (!crashed && fdAfter > fdBaseline + margin && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    fdAfter = server.fds();
  }
  if (!crashed && fdAfter > fdBaseline + margin) {
    fail(`fds not back to the baseline: ${fdAfter} open, baseline ${fdBaseline} (+${margin} allowed)`);
  }
  for (const e of server.egress) fail(`the server tried to send outside loopback: ${e}`);
  for (const e of server.errors) {
    if (!e.startsWith("{") || /"level":60/.test(e)) fail(`server error output: ${e}`);
  }
  return {
    seed: o.seed,
    inputs: next,
    byKind,
    endings,
    datagrams,
    probes,
    udpProbes,
    fdBaseline,
    fdAfter,
    failures,
  };
}

export interface FuzzSetup {
  server: ProbedFerry;
  targets: FuzzTargets;
  user: { name: string; password: string };
  /** Present when the GSSAPI add-on and an MIT KDC are there: the server then offers gssapi. */
  gssToken?: () => Buffer;
  handshakeMs: number;
  /** Why GSSAPI is not offered, when it is not. */
  gssapiSkipped?: string;
  stop(): Promise<void>;
}

/**
 * Starts what a fuzz run needs: echo targets (TCP and UDP), a throwaway Kerberos realm when the
 * GSSAPI add-on is built, and `bin/ferry serve` (probed) offering none, userpass and, with the
 * realm, gssapi, admitting only the echo targets on loopback.
 */
export async function startFuzzSetup(options: {
  handshakeMs?: number;
  lifetimeSec: number;
  /** false: do not offer GSSAPI even when it could be. */
  gssapi?: boolean;
}): Promise<FuzzSetup> {
  const handshakeMs = options.handshakeMs ?? 2000;
  const echo = await startEchoServer();
  const udpEcho = await startUdpEcho();
  const stops: (() => Promise<void>)[] = [() => echo.close(), () => udpEcho.close()];
  const stop = async (): Promise<void> => {
    for (const s of stops.reverse()) await s().catch(() => {});
  };
  try {
    let gssToken: (() => Buffer) | undefined;
    let gssapiSkipped: string | undefined;
    let gssapiConfig: Record<string, unknown> | undefined;
    let env: NodeJS.ProcessEnv | undefined;
    if (options.gssapi === false) gssapiSkipped = "not asked for";
    else if (!gssapiAvailable()) gssapiSkipped = GSSAPI_NOT_BUILT;
    else if (!["krb5kdc", "kdb5_util", "kadmin.local", "kinit"].every(hasTool))
      gssapiSkipped = "no MIT Kerberos tools (apt-get install krb5-kdc krb5-admin-server krb5-user)";
    else {
      const realm = await startTestRealm();
      stops.push(() => realm.stop());
      env = realm.env;
      gssapiConfig = {
        keytab: realm.keytab,
        principal: "rcmd/localhost",
        protection: ["confidentiality", "integrity", "none"],
      };
      const gss = loadGssapi();
      gssToken = () => {
        const ctx = new gss.Context("rcmd@localhost", realm.ccache);
        try {
          return ctx.stepSync();
        } finally {
          ctx.dispose();
        }
      };
    }
    const user = { name: "fuzz", password: "fuzz-password-1" };
    const loopback = ["127.0.0.0/8", "::1/128"];
    const server = await startProbedFerry({
      config: {
        auth: gssapiConfig ? ["none", "userpass", "gssapi"] : ["none", "userpass"],
        ...(gssapiConfig && { gssapi: gssapiConfig }),
        clients: [{ allow: { from: loopback } }],
        // Only our own targets: a mutated port must not reach someone else's loopback service.
        rules: [
          { allow: { commands: ["connect"], to: loopback, ports: [echo.port] } },
          { allow: { commands: ["udp"], to: loopback, ports: [udpEcho.port] } },
          { allow: { commands: ["bind"], to: loopback } },
          { deny: {} },
        ],
        limits: { sessions: 5000, sessionsPerClient: 1000, associationsPerClient: 64 },
        timeouts: { handshake: `${handshakeMs}ms`, bind: "5s", drain: "2s" },
      },
      args: ["--user", `${user.name}:${user.password}`],
      env,
      lifetimeSec: options.lifetimeSec,
    });
    stops.push(async () => {
      await server.stop();
    });
    return {
      server,
      targets: { echoPort: echo.port, udpEchoPort: udpEcho.port },
      user,
      gssToken,
      handshakeMs,
      gssapiSkipped,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
