import { EventEmitter } from "node:events";
import net from "node:net";
import { normalizeIp } from "../policy/addresses.js";
import type { ServerContext, SessionRecord } from "./context.js";
import { describeListenError } from "./listen-error.js";
import { cutRelay } from "./relay.js";
import { runSession } from "./session.js";

export interface ListeningAddress {
  host: string;
  port: number;
}

export interface RefusedConnection {
  client: string;
  clientPort: number;
  reason: string;
}

export interface FerryServerEvents {
  session: [SessionRecord];
  refused: [RefusedConnection];
}

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
  private readonly sockets = new Set<net.Socket>();
  private nextId = 1;

  constructor(private context: ServerContext) {
    super();
  }

  get activeSessions(): number {
    return this.sockets.size;
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
      const a = server.address() as net.AddressInfo;
      bound.push({ host: a.address, port: a.port });
    }
    this.noteEndpoints();
    return bound;
  }

  private async open(host: string, port: number): Promise<net.Server> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (s) => this.accept(s));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host, port, exclusive: true }, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      throw new ListenError(describeListenError(err as NodeJS.ErrnoException, host, port));
    }
    // Accept errors (EMFILE and the like) must not take the process down.
    server.on("error", () => {});
    this.configured.set(server, listenKey(host, port));
    return server;
  }

  /** The addresses actually listened on. */
  get listening(): ListeningAddress[] {
    return this.servers.map((s) => {
      const a = s.address() as net.AddressInfo;
      return { host: a.address, port: a.port };
    });
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
    const addressOf = (s: net.Server): ListeningAddress => {
      const a = s.address() as net.AddressInfo;
      return { host: a.address, port: a.port };
    };
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
        }
        return closed;
      },
      abort: async () => {
        await Promise.all(fresh.map(closeServer));
        for (const s of fresh) this.configured.delete(s);
      },
    };
  }

  private accept(socket: net.Socket): void {
    const client = normalizeIp(socket.remoteAddress ?? "");
    const clientPort = socket.remotePort ?? 0;
    const ctx = this.context;
    const refuse = (reason: string): void => {
      socket.destroy();
      this.emit("refused", { client, clientPort, reason });
    };
    const decision = ctx.policy.client(client);
    if (decision.log) ctx.state.emit("decision", { stage: "client", client, decision });
    if (decision.verdict === "deny")
      return refuse(`client refused by rule ${decision.rule}: ${decision.reason}`);
    const { sessions, sessionsPerClient } = ctx.config.limits;
    if (this.sockets.size >= sessions) return refuse(`session limit reached (${sessions} in total)`);
    const releaseClient = ctx.state.sessionsPerClient.acquire(client, sessionsPerClient);
    if (!releaseClient) return refuse(`session limit for ${client} reached (${sessionsPerClient})`);

    this.sockets.add(socket);
    const record: SessionRecord = {
      id: this.nextId++,
      client,
      clientPort,
      bytesUp: 0,
      bytesDown: 0,
      startedAt: Date.now(),
      durationMs: 0,
    };
    void this.serve(socket, ctx, record, releaseClient);
  }

  /** Runs the session; it counts as ended once its socket has closed too. */
  private async serve(
    socket: net.Socket,
    ctx: ServerContext,
    record: SessionRecord,
    releaseClient: () => void,
  ): Promise<void> {
    try {
      await runSession(socket, ctx, record);
      // Not events.once: it rejects on 'error', and a client's reset would then end the session
      // early and surface as an unhandled rejection that kills the process.
      if (!socket.closed) await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    } finally {
      this.sockets.delete(socket);
      releaseClient();
      record.durationMs = Date.now() - record.startedAt;
      this.emit("session", record);
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
    const stopped = this.closeListeners();
    if (this.sockets.size > 0 && drainMs > 0) {
      const deadline = Date.now() + drainMs;
      while (this.sockets.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, Math.min(100, deadline - Date.now())));
      }
    }
    const reason =
      drainMs > 0 ? `cut at shutdown: still open after the ${drainMs} ms drain` : "cut at shutdown";
    for (const s of this.sockets) {
      // Through the relay first: it resets the target side too, even when this socket has
      // already closed and only the target (paused, or not reading) keeps the session open.
      cutRelay(s, reason);
      // With an error, which a stream over this socket (GSSAPI's) passes on even after the
      // client's FIN, so its relay fails too; the session's own listener takes it.
      s.destroy(new Error(reason));
    }
    while (this.sockets.size > 0) await new Promise((r) => setTimeout(r, 5));
    await stopped;
  }
}

const listenKey = (host: string, port: number): string =>
  `${host.includes(":") ? `[${host}]` : host}:${port}`;

const closeServer = (s: net.Server): Promise<void> => new Promise((resolve) => s.close(() => resolve()));
