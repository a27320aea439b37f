import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import type { SocksAddress } from "../../src/protocol/address.js";
import type { Parser } from "../../src/protocol/parse.js";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
  type Socks5Reply,
} from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import type { SessionRecord } from "../../src/server/context.js";
import type { RunningFerry } from "./ferry.js";
import { waitFor } from "./net.js";

/**
 * A raw TCP client for tests: buffers what arrives and reads it with the project's own parsers,
 * with a deadline on every wait so a broken server fails the test instead of hanging it.
 */
export class TestClient {
  private buffer = Buffer.alloc(0);
  ended = false;
  closed = false;
  error: Error | undefined;
  private wake: (() => void) | undefined;

  private readonly onData = (c: Buffer): void => {
    this.buffer = Buffer.concat([this.buffer, c]);
    this.notify();
  };

  private constructor(readonly socket: net.Socket) {
    socket.on("data", this.onData);
    socket.on("end", () => {
      this.ended = true;
      this.notify();
    });
    socket.on("close", () => {
      this.closed = true;
      this.notify();
    });
    socket.on("error", (err) => {
      this.error = err;
      this.notify();
    });
  }

  static async connect(port: number, host = "127.0.0.1", localAddress?: string): Promise<TestClient> {
    const socket = net.connect({ port, host, allowHalfOpen: true, ...(localAddress && { localAddress }) });
    const client = new TestClient(socket);
    await once(socket, "connect");
    client.localPort = socket.localPort ?? 0;
    return client;
  }

  /** Kept from connect time: Node forgets a socket's local port once it is closed. */
  localPort = 0;

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private async waitChange(deadline: number, what: string): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${what}`);
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.wake = resolve;
      timer = setTimeout(resolve, left);
    });
    clearTimeout(timer);
  }

  write(bytes: Buffer | string): void {
    this.socket.write(bytes);
  }

  /** Reads one message with `parse`; fails if the peer closes first or nothing comes in time. */
  async read<T>(parse: Parser<T>, timeoutMs = 10_000, what = "a message"): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = parse(this.buffer);
      if (parsed) {
        this.buffer = this.buffer.subarray(parsed.consumed);
        return parsed.value;
      }
      if (this.ended || this.closed) {
        throw new Error(`connection closed while waiting for ${what}; had ${this.buffer.toString("hex")}`);
      }
      await this.waitChange(deadline, what);
    }
  }

  async readBytes(n: number, timeoutMs = 10_000): Promise<Buffer> {
    return this.read(
      (b) => (b.length >= n ? { value: Buffer.from(b.subarray(0, n)), consumed: n } : undefined),
      timeoutMs,
      `${n} bytes`,
    );
  }

  /**
   * Everything until the peer's FIN (or the connection's end), and whether it ended in time.
   * Closes wait 5 s by default: generous on a loaded machine, yet below the server's default 10 s
   * handshake timeout, so a close that only that timer made cannot pass for the one a test expects.
   */
  async readToEnd(timeoutMs = 5000): Promise<{ data: Buffer; ended: boolean }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && !this.closed && Date.now() < deadline)
      await this.waitChange(deadline, "the end").catch(() => {});
    const data = this.buffer;
    this.buffer = Buffer.alloc(0);
    return { data, ended: this.ended || this.closed };
  }

  /** Resolves once the socket is fully closed; fails after `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    await waitFor(() => this.closed || this.ended, timeoutMs, "the server to close the connection");
  }

  /** Hands the raw socket's data over to the caller: returns what is buffered and stops buffering. */
  takeOver(): Buffer {
    this.socket.off("data", this.onData);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** The failure reply a SOCKS5 server sends: VER REP RSV and the address 0.0.0.0:0. */
export function socks5Failure(rep: number): Buffer {
  return Buffer.from([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]);
}

export interface Socks5Options {
  methods?: number[];
  user?: string;
  password?: string;
  host?: string;
}

/** Greeting, optional RFC 1929 login, CONNECT; returns the client and the proxy's reply. */
export async function socks5Connect(
  proxyPort: number,
  target: SocksAddress,
  options: Socks5Options = {},
): Promise<{ client: TestClient; reply: Socks5Reply }> {
  const client = await TestClient.connect(proxyPort, options.host);
  const methods = options.methods ?? (options.user ? [2] : [0]);
  client.write(encodeGreeting({ methods }));
  const method = await client.read(parseMethodSelection, 10_000, "the method selection");
  if (method === 2) {
    client.write(encodeUserPassRequest({ username: options.user ?? "", password: options.password ?? "" }));
    const status = await client.read(parseUserPassReply, 30_000, "the RFC 1929 reply");
    assert.ok(status.ok, `login refused with status ${status.status}`);
  } else {
    assert.equal(method, 0, "expected the no-authentication method");
  }
  client.write(encodeRequest({ command: "connect", address: target }));
  const reply = await client.read(parseReply, 15_000, "the CONNECT reply");
  return { client, reply };
}

/**
 * One complete CONNECT through the proxy to an echo server, proving the server still serves.
 * Returns the client's local port, the key of its session record.
 */
export async function assertEchoThrough(
  proxyPort: number,
  echoPort: number,
  options: Socks5Options = {},
): Promise<number> {
  const { client, reply } = await socks5Connect(
    proxyPort,
    { type: "ipv4", host: "127.0.0.1", port: echoPort },
    options,
  );
  try {
    assert.equal(reply.reply, 0, "CONNECT should succeed");
    const probe = Buffer.from(`still serving ${Math.random()}`);
    client.write(probe);
    assert.deepEqual(await client.readBytes(probe.length), probe);
    return client.localPort;
  } finally {
    client.destroy();
  }
}

/** The session record of the connection whose client port is `port`, once the session has ended. */
export async function recordFor(
  ferry: RunningFerry,
  port: number,
  timeoutMs = 10_000,
): Promise<SessionRecord> {
  await waitFor(
    () => ferry.records.some((r) => r.clientPort === port),
    timeoutMs,
    `the record of client port ${port}`,
  );
  return ferry.records.find((r) => r.clientPort === port)!;
}

/** An RFC 1929 login and nothing more: whether it was accepted, and how long its reply took. */
export async function userPassLogin(
  proxyPort: number,
  user: string,
  password: string,
): Promise<{ ok: boolean; ms: number }> {
  const client = await TestClient.connect(proxyPort);
  try {
    client.write(encodeGreeting({ methods: [2] }));
    assert.equal(await client.read(parseMethodSelection, 10_000, "the method selection"), 2);
    const t0 = performance.now();
    client.write(encodeUserPassRequest({ username: user, password }));
    const status = await client.read(parseUserPassReply, 30_000, "the RFC 1929 reply");
    return { ok: status.ok, ms: performance.now() - t0 };
  } finally {
    client.destroy();
  }
}
