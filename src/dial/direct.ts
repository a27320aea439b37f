import net from "node:net";
import type { External } from "../config/routes-schema.js";
import { formatAddress, type SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import type { Dialed, DialOptions } from "./dialer.js";
import { DialError } from "./errors.js";
import type { Resolved } from "./family.js";

export interface DirectDialerOptions {
  /** How long Happy Eyeballs waits on one address before racing the next (RFC 8305 says 250 ms). */
  attemptDelayMs?: number;
  /** Local addresses, per family, outbound connections bind to (the `external` config key). */
  external?: External;
}

/**
 * Connects straight to the target's admitted addresses, in the order given: Happy Eyeballs, each
 * attempt bound to the external address of its family. Which addresses may be dialled is not its
 * business: Outbound (src/dial/outbound.ts) decides that and hands over only those.
 */
export class DirectDialer {
  constructor(private readonly options: DirectDialerOptions = {}) {}

  dial(target: SocksAddress, addresses: readonly Resolved[], options: DialOptions = {}): Promise<Dialed> {
    return new Promise((resolve, reject) =>
      new Attempts(target, addresses, options, this.options, resolve, reject).start(),
    );
  }
}

/** Per attempt: its socket, the address it went to, and its own listeners. */
interface Pending {
  socket: net.Socket;
  address: string;
  onConnect: () => void;
  onError: (err: NodeJS.ErrnoException) => void;
}

/**
 * Happy Eyeballs by hand: Node's autoSelectFamily is off as soon as a localAddress is given, and
 * egress needs a different local address per family. An attempt starts when the previous one
 * fails or after the attempt delay; the first to connect wins and the others are dropped.
 */
class Attempts {
  // Each attempt's own listeners, so the winner loses exactly those: removeAllListeners would
  // `delete` keys of the socket's event table and turn it into a slow dictionary.
  private readonly pending: Pending[] = [];
  private readonly errors: Error[] = [];
  private next = 0;
  private done = false;
  private stagger: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly delay: number;
  private readonly external: External;
  private readonly onAbort = (): void =>
    this.finish(new DialError("dial aborted", Reply.GENERAL_FAILURE, "ABORT_ERR"));

  constructor(
    readonly target: SocksAddress,
    private readonly addresses: readonly Resolved[],
    private readonly options: DialOptions,
    dialer: DirectDialerOptions,
    private readonly resolve: (dialed: Dialed) => void,
    private readonly reject: (err: Error) => void,
  ) {
    this.delay = dialer.attemptDelayMs ?? 250;
    this.external = dialer.external ?? {};
  }

  start(): void {
    // Not destructured: with a hangup, reading `signal` would make the AbortSignal it spares.
    const { timeoutMs, hangup } = this.options;
    if (timeoutMs && timeoutMs > 0) this.timer = setTimeout(timedOut, timeoutMs, this, timeoutMs);
    if (hangup) {
      if (hangup.aborted) return this.onAbort();
      hangup.watch(this.onAbort);
    } else if (this.options.signal) {
      const { signal } = this.options;
      if (signal.aborted) return this.onAbort();
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
    this.attempt();
  }

  finish(err: Error | undefined, winner?: Pending): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.stagger);
    clearTimeout(this.timer);
    if (this.options.hangup) this.options.hangup.unwatch(this.onAbort);
    else this.options.signal?.removeEventListener("abort", this.onAbort);
    for (const p of this.pending) {
      if (p !== winner) p.socket.destroy();
      else {
        p.socket.off("connect", p.onConnect);
        p.socket.off("error", p.onError);
      }
    }
    this.pending.length = 0;
    if (!winner) return this.reject(err!);
    const s = winner.socket;
    this.resolve({
      stream: s,
      local: { host: s.localAddress ?? "0.0.0.0", port: s.localPort ?? 0 },
      // Where the winning attempt went: what getpeername would say, without asking the kernel.
      remote: { host: winner.address, port: this.target.port },
    });
  }

  attempt(): void {
    clearTimeout(this.stagger);
    const { addresses, target } = this;
    if (this.done || this.next >= addresses.length) return;
    const a = addresses[this.next++]!;
    const localAddress = a.family === 6 ? this.external.ipv6 : this.external.ipv4;
    const socket = net.connect({
      host: a.address,
      port: target.port,
      family: a.family,
      allowHalfOpen: true,
      ...(localAddress && { localAddress }),
    });
    const p: Pending = {
      socket,
      address: a.address,
      onConnect: () => this.finish(undefined, p),
      onError: (err) => {
        const i = this.pending.indexOf(p);
        if (i >= 0) this.pending.splice(i, 1);
        socket.destroy();
        this.errors.push(
          err.syscall === "bind"
            ? new DialError(
                `cannot bind to the external address ${localAddress}: ${err.code}; is it an address of this host? (external: in the config)`,
                Reply.GENERAL_FAILURE,
                err.code,
              )
            : err,
        );
        if (this.next < addresses.length) this.attempt();
        else if (this.pending.length === 0) {
          this.finish(
            this.errors.length === 1
              ? this.errors[0]!
              : new AggregateError(this.errors, `every address of ${target.host} failed`),
          );
        }
      },
    };
    this.pending.push(p);
    socket.once("connect", p.onConnect);
    socket.once("error", p.onError);
    if (this.next < addresses.length) this.stagger = setTimeout(() => this.attempt(), this.delay);
  }
}

function timedOut(attempts: Attempts, ms: number): void {
  attempts.finish(
    new DialError(
      `connect to ${formatAddress(attempts.target)} timed out after ${ms} ms`,
      Reply.TTL_EXPIRED,
      "ETIMEDOUT",
    ),
  );
}
