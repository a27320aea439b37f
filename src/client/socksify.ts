import net from "node:net";
import { DIRECT } from "./chain.js";
import { connect } from "./connect.js";
import type { ProxyChain } from "./proxy.js";

type ConnectArgs = unknown[];
type SocketWithMark = net.Socket & { [DIRECT]?: boolean };

/** Pulls host, port and callback out of the many forms `socket.connect()` accepts. */
function targetOf(
  args: ConnectArgs,
): { host: string; port: number; rest: object; cb?: () => void } | undefined {
  // net.createConnection passes its already normalised [options, cb] as one array.
  const list = Array.isArray(args[0]) ? (args[0] as ConnectArgs) : args;
  const [first, second] = list;
  const cb = list.find((a) => typeof a === "function") as (() => void) | undefined;
  if (first !== null && typeof first === "object") {
    const o = first as net.TcpNetConnectOpts & net.IpcNetConnectOpts;
    if ((o.path !== undefined && o.path !== null) || o.port === undefined || o.port === null)
      return undefined;
    const { host, port, lookup: _lookup, family: _family, hints: _hints, ...rest } = o;
    return { host: host ?? "localhost", port: Number(port), rest, cb };
  }
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    return { host: typeof second === "string" ? second : "localhost", port: Number(first), rest: {}, cb };
  }
  return undefined; // a pipe path
}

/**
 * Makes every TCP connection this process opens go through `proxy`: `net.connect`,
 * `net.createConnection`, `new net.Socket().connect`, and so `http`, `https`, `tls` and the
 * built-in `fetch`. Each socket connects to a loopback splice inside this process, which joins it
 * to a SOCKS connection for the real target: the caller keeps a genuine `net.Socket`, and TLS runs
 * end to end. Unix socket paths and the client's own proxy connections are left alone.
 * Returns a function that undoes it.
 */
export async function socksify(proxy: ProxyChain): Promise<() => void> {
  const original = net.Socket.prototype.connect;
  type Outer = { target: { host: string; port: number }; done: (err?: Error) => void };
  const meetings = new Map<number, { outer?: Outer; inner?: net.Socket }>();

  const splice = (outer: Outer, accepted: net.Socket): void => {
    accepted.on("error", () => {});
    connect(proxy, outer.target, { allowHalfOpen: true }).then(
      (remote) => {
        remote.on("error", () => accepted.destroy());
        accepted.on("close", () => remote.destroy());
        remote.pipe(accepted);
        accepted.pipe(remote);
        outer.done();
      },
      (err: Error) => {
        accepted.destroy();
        outer.done(err);
      },
    );
  };
  const meet = (port: number, part: { outer?: Outer; inner?: net.Socket }): void => {
    const m = { ...meetings.get(port), ...part };
    if (m.outer && m.inner) {
      meetings.delete(port);
      splice(m.outer, m.inner);
    } else meetings.set(port, m);
  };

  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    if (s.remotePort !== undefined) meet(s.remotePort, { inner: s });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  server.unref();
  const splicePort = (server.address() as net.AddressInfo).port;

  net.Socket.prototype.connect = function (this: SocketWithMark, ...args: ConnectArgs) {
    const t = this[DIRECT] ? undefined : targetOf(args);
    if (!t) return (original as (...a: ConnectArgs) => net.Socket).apply(this, args);
    // Until the SOCKS connection to the real target stands, the socket stays "connecting": its
    // 'connect' and 'ready' events wait, and so do early writes (Node queues them while
    // connecting), so a failure looks like a failed connect to the program.
    const socket = this as net.Socket & { connecting: boolean };
    const emit = socket.emit;
    const held: unknown[][] = [];
    socket.emit = function (this: net.Socket, event: string | symbol, ...rest: unknown[]) {
      if (event !== "connect" && event !== "ready")
        return (emit as (...a: unknown[]) => boolean).call(this, event, ...rest);
      if (event === "connect") {
        socket.connecting = true;
        if (socket.localPort !== undefined) meet(socket.localPort, { outer: { target, done } });
      }
      held.push([event, ...rest]);
      return true;
    } as typeof emit;
    const done = (err?: Error): void => {
      socket.emit = emit;
      if (err) {
        socket.destroy(err);
        return;
      }
      socket.connecting = false;
      for (const args of held) (emit as (...a: unknown[]) => boolean).apply(socket, args);
    };
    const target = { host: t.host, port: t.port };
    const opts = { ...t.rest, host: "127.0.0.1", port: splicePort };
    const call = original as (...a: ConnectArgs) => net.Socket;
    return t.cb ? call.call(this, opts, t.cb) : call.call(this, opts);
  } as typeof original;

  return () => {
    net.Socket.prototype.connect = original;
    server.close();
  };
}
