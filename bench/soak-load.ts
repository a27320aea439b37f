/**
 * The soak's load: each kind of traffic as a plain-callback session (no promise per byte, so the
 * load costs less CPU than what it loads), every wait bounded, all on 127.0.0.0/8.
 */
import { createHash } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";

export type Done = (error?: string) => void;

const GREETING_NONE = Buffer.from([5, 1, 0]);
const GREETING_USERPASS = Buffer.from([5, 1, 2]);

function request(command: number, host: string, port: number): Buffer {
  const b = Buffer.from([5, command, 0, 1, 0, 0, 0, 0, 0, 0]);
  Buffer.from(host.split(".").map(Number)).copy(b, 4);
  b.writeUInt16BE(port, 8);
  return b;
}

function userpass(user: string, password: string): Buffer {
  const u = Buffer.from(user);
  const p = Buffer.from(password);
  return Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]);
}

/** Length of the SOCKS5 reply at the start of `buf`, or 0 while incomplete. */
function replyLength(buf: Buffer): number {
  if (buf.length < 5) return 0;
  const len = buf[3] === 1 ? 10 : buf[3] === 4 ? 22 : 7 + buf[4]!;
  return buf.length >= len ? len : 0;
}

export interface Proxy {
  port: number;
}

/**
 * Greeting (with an RFC 1929 login when `login` is given), then `command` to host:port; calls
 * `ready(socket, reply)` with the first reply's bytes once it is a success, or `done(error)`.
 * Every failure names its step, so errors can be counted by kind.
 */
export function handshake(
  proxy: Proxy,
  command: number,
  host: string,
  port: number,
  login: { user: string; password: string } | undefined,
  ready: (s: net.Socket, reply: Buffer, rest: Buffer) => void,
  done: Done,
  timeoutMs: number,
): net.Socket {
  const s = net.connect({ host: "127.0.0.1", port: proxy.port, noDelay: true });
  let settled = false;
  const fail = (why: string): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    s.destroy();
    done(why);
  };
  const timer = setTimeout(() => fail(`timeout in handshake`), timeoutMs);
  s.on("error", (e: NodeJS.ErrnoException) => fail(`socket ${e.code ?? e.message}`));
  s.on("close", () => fail("closed by the server during the handshake"));
  let stage = 0;
  let buf: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    if (stage === 0) {
      if (buf.length < 2) return;
      if (buf[0] !== 5 || buf[1] !== (login ? 2 : 0)) return fail(`method ${buf[1]}`);
      buf = buf.subarray(2);
      if (login) {
        stage = 1;
        s.write(userpass(login.user, login.password));
      } else {
        stage = 2;
        s.write(request(command, host, port));
      }
    }
    if (stage === 1) {
      if (buf.length < 2) return;
      if (buf[1] !== 0) return fail(`login refused (${buf[1]})`);
      buf = buf.subarray(2);
      stage = 2;
      s.write(request(command, host, port));
    }
    const len = replyLength(buf);
    if (len === 0) return;
    if (buf[1] !== 0) return fail(`reply ${buf[1]}`);
    settled = true;
    clearTimeout(timer);
    s.off("data", onData);
    s.removeAllListeners("close");
    s.removeAllListeners("error");
    ready(s, buf.subarray(0, len), buf.subarray(len));
  };
  s.once("connect", () => s.write(login ? GREETING_USERPASS : GREETING_NONE));
  s.on("data", onData);
  return s;
}

/**
 * One short session, the bulk of the soak: CONNECT to the echo server, 32 bytes there and back,
 * FIN, wait for the server's close.
 */
export function churn(
  proxy: Proxy,
  echoPort: number,
  login: { user: string; password: string } | undefined,
  done: Done,
  timeoutMs = 20_000,
): void {
  handshake(
    proxy,
    1,
    "127.0.0.1",
    echoPort,
    login,
    (s, _reply, rest) => {
      const payload = Buffer.from(`soak ${Math.random().toString(36).slice(2, 12)} 0123456789abcdef`);
      let got = rest;
      let finished = false;
      const finish = (err?: string): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        s.destroy();
        done(err);
      };
      const timer = setTimeout(() => finish("timeout in relay"), timeoutMs);
      s.on("error", (e: NodeJS.ErrnoException) => finish(`relay ${e.code ?? e.message}`));
      s.on("data", (c: Buffer) => {
        got = got.length === 0 ? c : Buffer.concat([got, c]);
      });
      s.on("end", () => {
        finish(got.equals(payload) ? undefined : `echo mismatch (${got.length} of ${payload.length} bytes)`);
      });
      s.end(payload);
    },
    done,
    timeoutMs,
  );
}

/** A deterministic stream of `bytes` bytes, in 64 KiB chunks, with its sha256. */
function* chunks(bytes: number, seed: number): Generator<Buffer> {
  const block = Buffer.alloc(64 * 1024);
  for (let i = 0; i < block.length; i += 4) block.writeUInt32BE((i * 2654435761 + seed) >>> 0, i);
  for (let sent = 0, n = 0; sent < bytes; n++) {
    const c = Buffer.from(block.subarray(0, Math.min(block.length, bytes - sent)));
    c.writeUInt32BE(n, 0);
    sent += c.length;
    yield c;
  }
}

/** One long transfer: `bytes` to the echo server and back, both checked by sha256. */
export function transfer(
  proxy: Proxy,
  echoPort: number,
  bytes: number,
  done: Done,
  timeoutMs = 300_000,
): void {
  handshake(
    proxy,
    1,
    "127.0.0.1",
    echoPort,
    undefined,
    (s, _reply, rest) => {
      const sent = createHash("sha256");
      const got = createHash("sha256");
      let received = rest.length;
      got.update(rest);
      let finished = false;
      const finish = (err?: string): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        s.destroy();
        done(err);
      };
      const timer = setTimeout(
        () => finish(`timeout in transfer (${received} of ${bytes} bytes back)`),
        timeoutMs,
      );
      s.on("error", (e: NodeJS.ErrnoException) => finish(`transfer ${e.code ?? e.message}`));
      s.on("data", (c: Buffer) => {
        received += c.length;
        got.update(c);
      });
      s.on("end", () => {
        if (received !== bytes) return finish(`transfer short (${received} of ${bytes} bytes)`);
        finish(sent.digest("hex") === got.digest("hex") ? undefined : "transfer sha256 mismatch");
      });
      const source = chunks(bytes, Math.floor(Math.random() * 2 ** 32));
      const pump = (): void => {
        for (;;) {
          const next = source.next();
          if (next.done) {
            s.end();
            return;
          }
          sent.update(next.value);
          if (!s.write(next.value)) {
            s.once("drain", pump);
            return;
          }
        }
      };
      pump();
    },
    done,
    timeoutMs,
  );
}

/** One UDP association: `count` datagrams to the UDP echo through the relay; loss is returned, not an error. */
export function association(
  proxy: Proxy,
  udpEchoPort: number,
  count: number,
  done: (error?: string, lost?: number) => void,
  timeoutMs = 20_000,
): void {
  handshake(
    proxy,
    3,
    "0.0.0.0",
    0,
    undefined,
    (control, reply) => {
      const relayPort = reply.readUInt16BE(8);
      const udp = dgram.createSocket("udp4");
      const waiting = new Set<string>();
      let finished = false;
      const finish = (err?: string): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        clearInterval(sender);
        control.destroy();
        try {
          udp.close();
        } catch {}
        done(err, waiting.size);
      };
      const timer = setTimeout(() => {
        finish(waiting.size === count ? "no datagram came back" : undefined);
      }, 3000);
      control.on("error", () => finish("control connection error"));
      control.on("close", () => finish("control connection closed by the server"));
      udp.on("error", (e) => finish(`udp ${e.message}`));
      udp.on("message", (m) => {
        const body = m.subarray(10).toString();
        if (waiting.delete(body) && waiting.size === 0) finish();
      });
      const header = Buffer.from([0, 0, 0, 1, 127, 0, 0, 1, 0, 0]);
      header.writeUInt16BE(udpEchoPort, 8);
      let sent = 0;
      let sender: NodeJS.Timeout | undefined;
      udp.bind(0, "127.0.0.1", () => {
        sender = setInterval(() => {
          if (sent >= count) return clearInterval(sender);
          const body = `dgram ${sent++} ${Math.random()}`;
          waiting.add(body);
          udp.send(Buffer.concat([header, Buffer.from(body)]), relayPort, "127.0.0.1");
        }, 10);
      });
    },
    (err) => done(err),
    timeoutMs,
  );
}

/** One BIND: the first reply names the listener, a peer connects, a word each way, both close. */
export function bind(proxy: Proxy, done: Done, timeoutMs = 20_000): void {
  handshake(
    proxy,
    2,
    "127.0.0.1",
    0,
    undefined,
    (control, reply, rest) => {
      const port = reply.readUInt16BE(8);
      let buf = rest;
      let stage = 0;
      let finished = false;
      const peer = net.connect({ host: "127.0.0.1", port });
      const finish = (err?: string): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        control.destroy();
        peer.destroy();
        done(err);
      };
      const timer = setTimeout(() => finish(`timeout in BIND (stage ${stage})`), timeoutMs);
      peer.on("error", (e: NodeJS.ErrnoException) => finish(`bind peer ${e.code ?? e.message}`));
      control.on("error", (e: NodeJS.ErrnoException) => finish(`bind control ${e.code ?? e.message}`));
      control.on("close", () => finish(`bind control closed (stage ${stage})`));
      let peerGot = "";
      peer.on("data", (c: Buffer) => {
        peerGot += c.toString();
        if (peerGot === "pong") finish();
      });
      const onControl = (): void => {
        if (stage === 0) {
          const len = replyLength(buf);
          if (len === 0) return;
          if (buf[1] !== 0) return finish(`second BIND reply ${buf[1]}`);
          buf = buf.subarray(len);
          stage = 1;
          peer.write("ping");
        }
        if (stage === 1 && buf.length >= 4) {
          if (buf.subarray(0, 4).toString() !== "ping") return finish("BIND relay mismatch");
          stage = 2;
          control.write("pong");
        }
      };
      control.on("data", (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        onControl();
      });
      onControl();
    },
    done,
    timeoutMs,
  );
}

/**
 * A wrong password from `from` (127.0.0.x): the server must refuse it, by a failure reply or by
 * closing (the throttle may hold it past the handshake timeout). Accepting it is the error.
 */
export function authFailure(proxy: Proxy, from: string, user: string, done: Done, timeoutMs: number): void {
  const s = net.connect({ host: "127.0.0.1", port: proxy.port, localAddress: from });
  let buf = Buffer.alloc(0);
  let finished = false;
  const finish = (err?: string): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    s.destroy();
    done(err);
  };
  const timer = setTimeout(() => finish("wrong password neither refused nor closed"), timeoutMs);
  s.on("error", () => finish());
  s.on("close", () => finish());
  s.once("connect", () =>
    s.write(Buffer.concat([GREETING_USERPASS, userpass(user, `wrong-${Math.random()}`)])),
  );
  s.on("data", (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    if (buf.length >= 4) finish(buf[3] === 0 ? "a wrong password was accepted" : undefined);
  });
}

/** Malformed input from `from`: random bytes or a cut handshake; the server must close in time. */
export function malformed(proxy: Proxy, from: string, bytes: Buffer, done: Done, timeoutMs: number): void {
  const s = net.connect({ host: "127.0.0.1", port: proxy.port, localAddress: from, allowHalfOpen: true });
  let finished = false;
  const finish = (err?: string): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    s.destroy();
    done(err);
  };
  const timer = setTimeout(() => finish("malformed input left open past the handshake timeout"), timeoutMs);
  s.on("error", () => finish());
  s.on("end", () => finish());
  s.on("close", () => finish());
  s.on("data", () => {});
  s.once("connect", () => s.write(bytes));
}

/** Echo targets: TCP (honours half-close) and UDP. */
export async function startTargets(): Promise<{
  echoPort: number;
  udpEchoPort: number;
  close(): Promise<void>;
}> {
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => tcp.listen(0, "127.0.0.1", r));
  const udp = dgram.createSocket("udp4");
  udp.on("message", (m, rinfo) => udp.send(m, rinfo.port, rinfo.address));
  udp.on("error", () => {});
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", r));
  return {
    echoPort: (tcp.address() as net.AddressInfo).port,
    udpEchoPort: udp.address().port,
    close: async () => {
      for (const s of sockets) s.destroy();
      udp.close();
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
}
