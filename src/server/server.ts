import cluster from "node:cluster";
import { EventEmitter } from "node:events";
import net from "node:net";
import { listenKey, type ProxyProtocolConfig } from "../config/listen-schema.js";
import { normalizeIp } from "../policy/addresses.js";
import type { ServerContext, SessionRecord } from "./context.js";
import { connectionCapacity, readFdLimit } from "./fd-budget.js";
import { HandshakeBudget } from "./handshake-budget.js";
import { type Claim, clientKey, SESSIONS_KEY, type Taken } from "./limit-store.js";
import { describeListenError } from "./listen-error.js";
import { type Preamble, readPreamble } from "./proxy-header.js";
import { cutRelay } from "./relay.js";
import { runSession, type SessionPhases } from "./session.js";
import { acceptTls, TLS_CERT_METHOD } from "./tls-listener.js";

export interface ListeningAddress {
  host: string;
  port: number;
}

export interface RefusedConnection {
  client: string;
  clientPort: number;
  reason: string;
  /** Refused by this client rule (else by a limit). */
  rule?: string;
  /** The balancer that relayed the connection, when a PROXY header named the client. */
  proxy?: string;
}

/** Connections closed at accept because the open-files limit is reached; at most one a second. */
export interface FdExhausted {
  /** The open-files limit, when known. */
  limit?: number;
  /** Client connections open. */
  connections: number;
  /** New connections closed since the last such event. */
  closed: number;
  /** Set when a listener stopped accepting for a while (accept failed with EMFILE or ENFILE). */
  pausedMs?: number;
}

export interface FerryServerEvents {
  /** The request has been read and a session slot taken: the record knows its command and target. */
  established: [SessionRecord];
  /** The session has ended (every connection, established or not): the record is complete. */
  session: [SessionRecord];
  refused: [RefusedConnection];
  fdExhausted: [FdExhausted];
}

/**
 * Exclusive (bound by this process) except in a cluster worker, whose listeners share the
 * primary's socket with the other workers (docs/workers.md).
 */
const EXCLUSIVE_LISTEN = !cluster.isWorker;

/** A listener that failed to accept for lack of descriptors rests this long at first, doubling. */
const ACCEPT_PAUSE_MIN_MS = 100;
const ACCEPT_PAUSE_MAX_MS = 5000;
/** fdExhausted is emitted at most this often. */
const FD_REPORT_MS = 1000;

/** A listen failure, with a message fit to print as it is. */
export class ListenError extends Error {
  override name = "ListenError";
}

/**
 * Accepts connections on every configured address and runs one session each. The context can
 * be swapped (`update`) while running: new sessions get the new one, live sessions keep theirs.
 */
export class FerryServer extends EventEmitter<FerryServerEvents> {
  private readonly servers: net.Server[] = [];
  /** Which configured address ("host:port" as written) each listening server serves. */
  private readonly configured = new Map<net.Server, string>();
  /** Where each listening server is bound, kept while a paused one has no address. */
  private readonly bound = new Map<net.Server, ListeningAddress>();
  /** Every client connection, in the handshake or established, and what it has done so far. */
  private readonly sockets = new Map<net.Socket, SessionRecord>();
  /** Connections on a PROXY protocol listener whose header is still being read. */
  private readonly preambles = new Set<net.Socket>();
  /** Per context, the PROXY protocol options of its listen entries by address. */
  private readonly proxyOptions = new WeakMap<ServerContext, Map<string, ProxyProtocolConfig>>();
  private readonly handshakes = new HandshakeBudget();
  /** Client connections that fit in the open-files limit; set when listening. */
  private fdCapacity = Number.POSITIVE_INFINITY;
  private fdLimit: number | undefined;
  private fdClosed = 0;
  private fdPausedMs: number | undefined;
  private fdReportedAt = Number.NEGATIVE_INFINITY;
  private fdReportTimer: NodeJS.Timeout | undefined;
  private acceptPauseMs = 0;
  /** Listeners resting after running out of descriptors. */
  private readonly paused = new Set<net.Server>();
  private readonly pauseTimers = new Set<NodeJS.Timeout>();
  private stopping = false;
  private nextId = 1;

  constructor(private context: ServerContext) {
    super();
  }

  /** Client connections open, in the handshake or established. */
  get activeSessions(): number {
    return this.sockets.size;
  }

  /**
   * The sessions running now, their records as they stand (bytes are counted while data moves).
   * A record is not to be changed by the caller.
   */
  sessions(): IterableIterator<SessionRecord> {
    return this.sockets.values();
  }

  /**
   * Ends the running session `id` at once, resetting both sides, with `reason` in its record.
   * Returns false when no session of that id is running.
   */
  endSession(id: number, reason: string): boolean {
    for (const [socket, record] of this.sockets) {
      if (record.id !== id) continue;
      record.reason = reason;
      cutSession(socket, reason);
      return true;
    }
    return false;
  }

  /** Connections still in the handshake (limits.handshakes). */
  get handshaking(): number {
    return this.handshakes.inProgress;
  }

  /** Handshakes closed to make room, or by the timeout shortened under pressure. */
  get handshakesShed(): number {
    return this.handshakes.shed;
  }

  /** The context new sessions get (the configuration in force). */
  get current(): ServerContext {
    return this.context;
  }

  update(context: ServerContext): void {
    this.context = context;
    this.noteEndpoints();
  }

  /** Opens every listen address; on failure closes what opened and throws a ListenError. */
  async listen(): Promise<ListeningAddress[]> {
    const bound: ListeningAddress[] = [];
    for (const { host, port } of this.context.config.listen) {
      let server: net.Server;
      try {
        server = await this.open(host, port);
      } catch (err) {
        await this.closeListeners();
        throw err;
      }
      this.servers.push(server);
      bound.push(this.addressOf(server));
    }
    this.noteEndpoints();
    // Measured once everything is open, so the listeners count among the process's own files.
    this.fdLimit = readFdLimit();
    this.fdCapacity = connectionCapacity(this.fdLimit);
    return bound;
  }

  private async open(host: string, port: number): Promise<net.Server> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (s) =>
      this.accept(s, server),
    );
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host, port, exclusive: EXCLUSIVE_LISTEN }, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      throw new ListenError(describeListenError(err as NodeJS.ErrnoException, host, port));
    }
    // Accept errors must not take the process down. libuv closes connections it cannot take a
    // descriptor for (it keeps one spare for that) without telling us; only when even that fails
    // does accept report EMFILE, in a loop that would not end until a descriptor frees: closing
    // the listener is the only way out of it, so it rests and opens again.
    server.on("error", (err: NodeJS.ErrnoException) => {
      // Out of descriptors, or failing to open again after such a rest (retried, growing).
      if (err.code === "EMFILE" || err.code === "ENFILE" || this.paused.has(server))
        this.pauseAccepting(server, host, port);
    });
    this.configured.set(server, listenKey(host, port));
    const a = server.address() as net.AddressInfo;
    this.bound.set(server, { host: a.address, port: a.port });
    return server;
  }

  private addressOf(s: net.Server): ListeningAddress {
    return this.bound.get(s)!;
  }

  /** Closes a listener that ran out of descriptors and opens it again after a growing rest. */
  private pauseAccepting(server: net.Server, host: string, port: number): void {
    if (server.listening) server.close();
    this.paused.add(server);
    this.acceptPauseMs = Math.min(ACCEPT_PAUSE_MAX_MS, Math.max(ACCEPT_PAUSE_MIN_MS, this.acceptPauseMs * 2));
    this.reportFds(this.acceptPauseMs);
    const timer = setTimeout(() => {
      this.pauseTimers.delete(timer);
      // Not if it was closed meanwhile (shutdown, or a reload that dropped its address).
      if (this.stopping || !this.configured.has(server)) {
        this.paused.delete(server);
        return;
      }
      // The port it had (one configured as 0 got it from the system), so clients find it again.
      server.listen({ host, port: this.addressOf(server).port || port, exclusive: EXCLUSIVE_LISTEN }, () => {
        this.paused.delete(server);
        // Calmer after a while without trouble.
        const calm = setTimeout(() => {
          this.pauseTimers.delete(calm);
          if (server.listening) this.acceptPauseMs = 0;
        }, ACCEPT_PAUSE_MAX_MS);
        calm.unref();
        this.pauseTimers.add(calm);
      });
    }, this.acceptPauseMs);
    this.pauseTimers.add(timer);
  }

  /**
   * Reports the connections closed for lack of descriptors: the first at once, the rest at most
   * once a second, so an exhausted server neither floods its log nor goes quiet about it.
   */
  private reportFds(pausedMs?: number): void {
    if (pausedMs !== undefined) this.fdPausedMs = pausedMs;
    const now = performance.now();
    const emit = (): void => {
      // A pending report may be overdue behind a busy loop: this one says it all.
      clearTimeout(this.fdReportTimer);
      this.fdReportTimer = undefined;
      this.fdReportedAt = performance.now();
      const report: FdExhausted = { connections: this.sockets.size, closed: this.fdClosed };
      if (this.fdLimit !== undefined) report.limit = this.fdLimit;
      if (this.fdPausedMs !== undefined) report.pausedMs = this.fdPausedMs;
      this.fdClosed = 0;
      this.fdPausedMs = undefined;
      this.emit("fdExhausted", report);
    };
    if (now - this.fdReportedAt >= FD_REPORT_MS) emit();
    else if (!this.fdReportTimer) {
      this.fdReportTimer = setTimeout(emit, FD_REPORT_MS - (now - this.fdReportedAt));
      this.fdReportTimer.unref();
    }
  }

  /** The addresses actually listened on. */
  get listening(): ListeningAddress[] {
    return this.servers.map((s) => this.addressOf(s));
  }

  /** Tells the policy's self guard which sockets are ours. */
  private noteEndpoints(): void {
    if (this.context.state) this.context.state.endpoints = this.listening;
  }

  /**
   * For a reload: opens the addresses of `listen` not yet open (all or nothing, so a port in use
   * refuses the reload with nothing changed). `commit` then closes the ones no longer
   * configured; `abort` closes the new ones again. Live sessions are untouched either way.
   */
  async prepareListen(
    listen: readonly { host: string; port: number }[],
  ): Promise<{ opened: ListeningAddress[]; commit(): Promise<ListeningAddress[]>; abort(): Promise<void> }> {
    const wanted = new Set(listen.map((l) => listenKey(l.host, l.port)));
    const have = new Set(this.configured.values());
    const fresh: net.Server[] = [];
    try {
      for (const l of listen) {
        if (!have.has(listenKey(l.host, l.port))) fresh.push(await this.open(l.host, l.port));
      }
    } catch (err) {
      await Promise.all(fresh.map(closeServer));
      throw err;
    }
    const addressOf = (s: net.Server): ListeningAddress => this.addressOf(s);
    return {
      opened: fresh.map(addressOf),
      commit: async () => {
        const removed = this.servers.filter((s) => !wanted.has(this.configured.get(s) ?? ""));
        const closed = removed.map(addressOf);
        for (const s of removed) this.servers.splice(this.servers.indexOf(s), 1);
        this.servers.push(...fresh);
        this.noteEndpoints();
        // close() stops listening at once; its callback would wait for the live sessions
        // accepted there, which keep running, so it is not awaited.
        for (const s of removed) {
          s.close();
          this.configured.delete(s);
          this.bound.delete(s);
        }
        return closed;
      },
      abort: async () => {
        await Promise.all(fresh.map(closeServer));
        for (const s of fresh) {
          this.configured.delete(s);
          this.bound.delete(s);
        }
      },
    };
  }

  /** `listener` is the server that accepted; its configured address picks TLS and PROXY settings. */
  private accept(socket: net.Socket, listener: net.Server): void {
    const client = normalizeIp(socket.remoteAddress ?? "");
    const clientPort = socket.remotePort ?? 0;
    // Before anything else: what is left of the open-files limit is for the sessions running.
    if (this.sockets.size + this.preambles.size >= this.fdCapacity) {
      socket.destroy();
      this.fdClosed++;
      this.reportFds();
      return;
    }
    const ctx = this.context;
    const proxyProtocol = this.proxyProtocolOf(listener, ctx);
    const listen = this.configured.get(listener) ?? "";
    if (proxyProtocol) void this.acceptProxied(socket, ctx, proxyProtocol, client, clientPort, listen);
    else this.admit(socket, ctx, { client, clientPort }, listen);
  }

  /**
   * The listener's PROXY protocol options as `ctx` configures them (a reload may change them),
   * worked out once per context: accept is on every connection's path.
   */
  private proxyProtocolOf(listener: net.Server, ctx: ServerContext): ProxyProtocolConfig | undefined {
    let byKey = this.proxyOptions.get(ctx);
    if (!byKey) {
      byKey = new Map();
      for (const l of ctx.config.listen)
        if (l.proxyProtocol) byKey.set(listenKey(l.host, l.port), l.proxyProtocol);
      this.proxyOptions.set(ctx, byKey);
    }
    return byKey.size === 0 ? undefined : byKey.get(this.configured.get(listener) ?? "");
  }

  /**
   * A PROXY protocol listener: the header is read first (under the handshake budget, as the
   * balancer's connection), so the client rules and limits below see the client it names.
   */
  private async acceptProxied(
    socket: net.Socket,
    ctx: ServerContext,
    config: ProxyProtocolConfig,
    peer: string,
    peerPort: number,
    listen: string,
  ): Promise<void> {
    // Reset before we got to it (a balancer's connect-only health check): nobody to name or refuse.
    if (!peer) {
      socket.destroy();
      return;
    }
    this.preambles.add(socket);
    socket.on("error", ignoreError);
    const budget = Math.max(1, Math.floor(ctx.config.limits.handshakes / ctx.state.workers));
    let shed: string | undefined;
    const ticket = this.handshakes.admit(peer, budget, ctx.config.timeouts.handshake, (reason) => {
      shed = reason;
      socket.destroy();
    });
    let who: Preamble;
    try {
      who = await readPreamble(
        socket,
        config,
        { address: peer, port: peerPort },
        ctx.config.timeouts.handshake,
      );
    } catch (err) {
      socket.destroy();
      this.emit("refused", { client: peer, clientPort: peerPort, reason: shed ?? (err as Error).message });
      return;
    } finally {
      ticket.release();
      this.preambles.delete(socket);
    }
    if (this.stopping) socket.destroy();
    else this.admit(socket, ctx, who, listen);
  }

  /** Client rules and limits for `who`, then the session. */
  private admit(socket: net.Socket, ctx: ServerContext, who: Preamble, listen: string): void {
    const { client, clientPort, proxy } = who;
    const refuse = (reason: string, rule?: string): void => {
      socket.destroy();
      const e: RefusedConnection = { client, clientPort, reason };
      if (rule !== undefined) e.rule = rule;
      if (proxy) e.proxy = proxy;
      this.emit("refused", e);
    };
    const decision = ctx.policy.client(client);
    if (decision.log) ctx.state.emit("decision", { stage: "client", client, decision });
    if (decision.verdict === "deny")
      return refuse(`client refused by rule ${decision.rule}: ${decision.reason}`, decision.rule);
    // Sessions are taken when the request has been read (`established`); a client refused there
    // anyway is refused here already, before it costs a handshake (a password check, say).
    const { sessions, sessionsPerClient, handshakes } = ctx.config.limits;
    const claims: Claim[] = [
      { key: SESSIONS_KEY, limit: sessions },
      { key: clientKey(client), limit: sessionsPerClient },
    ];
    const store = ctx.state.store;
    if (store.full(claims[0]!)) return refuse(sessionRefusal(claims, 0));
    if (store.full(claims[1]!)) return refuse(sessionRefusal(claims, 1));

    const fresh = (): SessionRecord => {
      const r: SessionRecord = {
        id: this.nextId++,
        client,
        clientPort,
        bytesUp: 0,
        bytesDown: 0,
        startedAt: Date.now(),
        durationMs: 0,
      };
      if (proxy) r.proxy = proxy;
      return r;
    };
    const record = fresh();
    // A TLS listener's sessions read and write the decrypted stream; plain ones the socket itself.
    const tlsListener = ctx.tls.get(listen);
    const stream = tlsListener ? acceptTls(socket, tlsListener, record) : socket;
    this.sockets.set(stream, record);
    // With workers, each takes its share of the handshake budget (it protects this process).
    const budget = Math.max(1, Math.floor(handshakes / ctx.state.workers));
    const handshake = this.handshakes.admit(client, budget, ctx.config.timeouts.handshake, (reason) => {
      record.reason = reason;
      stream.destroy();
    });
    let releaseSession: (() => void) | undefined;
    let ended = false;
    const phases: SessionPhases = {
      established: () => {
        // A later request on a kept-alive HTTP connection: the slot is the connection's.
        if (releaseSession) {
          this.emit("established", this.sockets.get(stream) ?? record);
          return undefined;
        }
        handshake.release();
        const taken = store.take(claims);
        const settle = (t: Taken): string | undefined => {
          if ("refused" in t) return sessionRefusal(claims, t.refused);
          // The connection may have closed while a shared store was asked.
          if (ended) t.release();
          else {
            releaseSession = t.release;
            this.emit("established", record);
          }
          return undefined;
        };
        return taken instanceof Promise ? taken.then(settle) : settle(taken);
      },
      next: () => {
        const done = this.sockets.get(stream) ?? record;
        // An HTTP request's record notes its own end; the connection may have idled since.
        done.durationMs ||= Date.now() - done.startedAt;
        this.emit("session", done);
        const following = fresh();
        // What the connection established holds for every request on it.
        if (done.tls) following.tls = done.tls;
        if (done.method === TLS_CERT_METHOD) {
          following.method = done.method;
          if (done.user !== undefined) following.user = done.user;
        }
        this.sockets.set(stream, following);
        return following;
      },
    };
    void this.serve(stream, ctx, record, phases, () => {
      ended = true;
      handshake.release();
      releaseSession?.();
    });
  }

  /** Runs the session; it counts as ended once its socket has closed too. */
  private async serve(
    socket: net.Socket,
    ctx: ServerContext,
    record: SessionRecord,
    phases: SessionPhases,
    release: () => void,
  ): Promise<void> {
    try {
      await runSession(socket, ctx, record, phases);
      // Not events.once: it rejects on 'error', and a client's reset would then end the session
      // early and surface as an unhandled rejection that kills the process.
      if (!socket.closed) await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    } finally {
      // The connection's last record: an HTTP connection has one per request (phases.next).
      const last = this.sockets.get(socket) ?? record;
      this.sockets.delete(socket);
      release();
      last.durationMs ||= Date.now() - last.startedAt;
      this.emit("session", last);
    }
  }

  private async closeListeners(): Promise<void> {
    const servers = this.servers.splice(0);
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  /**
   * Stops accepting, lets live sessions finish for up to `drainMs`, then cuts the rest.
   * Resolves when every session has ended.
   */
  async close(drainMs = 0): Promise<void> {
    this.stopping = true;
    for (const t of this.pauseTimers) clearTimeout(t);
    clearTimeout(this.fdReportTimer);
    const stopped = this.closeListeners();
    if (this.sockets.size > 0 && drainMs > 0) {
      const deadline = Date.now() + drainMs;
      while (this.sockets.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, Math.min(100, deadline - Date.now())));
      }
    }
    const reason =
      drainMs > 0 ? `cut at shutdown: still open after the ${drainMs} ms drain` : "cut at shutdown";
    for (const s of this.sockets.keys()) cutSession(s, reason);
    for (const s of this.preambles) s.destroy();
    while (this.sockets.size + this.preambles.size > 0) await new Promise((r) => setTimeout(r, 5));
    await stopped;
    await this.context.state.store.close?.();
  }
}

function ignoreError(): void {}

function cutSession(socket: net.Socket, reason: string): void {
  // Through the relay first: it resets the target side too, even when this socket has already
  // closed and only the target (paused, or not reading) keeps the session open.
  cutRelay(socket, reason);
  // With an error, which a stream over this socket (GSSAPI's) passes on even after the client's
  // FIN, so its relay fails too; the session's own listener takes it.
  socket.destroy(new Error(reason));
}

/** Why the claim at `index` (sessions in total, or this client's) refuses a session. */
function sessionRefusal(claims: readonly Claim[], index: number): string {
  const { key, limit } = claims[index]!;
  return index === 0
    ? `session limit reached (${limit} in total)`
    : `session limit for ${key.slice(key.indexOf("\0") + 1)} reached (${limit})`;
}

const closeServer = (s: net.Server): Promise<void> => new Promise((resolve) => s.close(() => resolve()));
