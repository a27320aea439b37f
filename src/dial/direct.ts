import { lookup as systemLookup } from "node:dns/promises";
import net from "node:net";
import type { External } from "../config/routes-schema.js";
import { formatAddress, type SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import type { Dialed, Dialer, DialOptions } from "./dialer.js";
import { DialError, errorCode } from "./errors.js";
import { orderAddresses, type Resolved, type ResolvePreference } from "./family.js";

export interface DirectDialerOptions {
  /** How long Happy Eyeballs waits on one address before racing the next (RFC 8305 says 250 ms). */
  attemptDelayMs?: number;
  /** Local addresses, per family, outbound connections bind to (the `external` config key). */
  external?: External;
  /** Family preference when a rule does not say; `system` keeps the resolver's order. */
  resolve?: ResolvePreference;
  /** The resolver; tests give names addresses the system resolver does not know. */
  lookup?: (host: string) => Promise<Resolved[]>;
}

const defaultLookup = (host: string): Promise<Resolved[]> =>
  systemLookup(host, { all: true, verbatim: true });

/**
 * Connects straight to the target: resolve, filter through policy, order by family preference,
 * Happy Eyeballs, each attempt bound to the external address of its family.
 */
export class DirectDialer implements Dialer {
  constructor(private readonly options: DirectDialerOptions = {}) {}

  async dial(target: SocksAddress, options: DialOptions = {}): Promise<Dialed> {
    const addresses = await this.resolve(target, options);
    const socket = await this.connect(target, addresses, options);
    return {
      stream: socket,
      local: { host: socket.localAddress ?? "0.0.0.0", port: socket.localPort ?? 0 },
      remote: { host: socket.remoteAddress ?? addresses[0]!.address, port: socket.remotePort ?? target.port },
    };
  }

  private async resolve(target: SocksAddress, options: DialOptions): Promise<Resolved[]> {
    const preference = options.resolve ?? this.options.resolve ?? "system";
    let all: Resolved[];
    if (target.type === "domain") {
      try {
        all = await (this.options.lookup ?? defaultLookup)(target.host);
      } catch (err) {
        throw new DialError(
          `cannot resolve ${target.host}: ${errorCode(err) ?? err}`,
          Reply.HOST_UNREACHABLE,
          errorCode(err),
        );
      }
    } else {
      all = [{ address: target.host, family: target.type === "ipv6" ? 6 : 4 }];
    }
    const ordered = orderAddresses(all, preference);
    if (ordered.length === 0) {
      const family = preference === "ipv4-only" ? "IPv4" : "IPv6";
      const list = all.map((a) => a.address).join(", ");
      throw target.type === "domain"
        ? new DialError(
            `${target.host} has no ${family} address (${list}) and this route is resolve: ${preference}`,
            Reply.HOST_UNREACHABLE,
          )
        : new DialError(
            `${target.host} is not an ${family} address and this route is resolve: ${preference}`,
            Reply.ADDRESS_TYPE_NOT_SUPPORTED,
          );
    }
    const allowed = options.allowAddress ? ordered.filter((a) => options.allowAddress!(a.address)) : ordered;
    if (allowed.length === 0) {
      const list = ordered.map((a) => a.address).join(", ");
      throw new DialError(`${target.host} resolves only to denied addresses (${list})`, Reply.NOT_ALLOWED);
    }
    return allowed;
  }

  /**
   * Happy Eyeballs by hand: Node's autoSelectFamily is off as soon as a localAddress is given, and
   * egress needs a different local address per family. An attempt starts when the previous one
   * fails or after the attempt delay; the first to connect wins and the others are dropped.
   */
  private connect(target: SocksAddress, addresses: Resolved[], options: DialOptions): Promise<net.Socket> {
    const delay = this.options.attemptDelayMs ?? 250;
    const external = this.options.external ?? {};
    return new Promise((resolve, reject) => {
      // Each attempt's own listeners, so the winner loses exactly those: removeAllListeners would
      // `delete` keys of the socket's event table and turn it into a slow dictionary.
      const pending = new Map<net.Socket, { onConnect: () => void; onError: (err: Error) => void }>();
      const errors: Error[] = [];
      let next = 0;
      let done = false;
      let stagger: NodeJS.Timeout | undefined;
      const finish = (err: Error | undefined, winner?: net.Socket): void => {
        if (done) return;
        done = true;
        clearTimeout(stagger);
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        for (const [s, listeners] of pending) {
          if (s !== winner) s.destroy();
          else {
            s.off("connect", listeners.onConnect);
            s.off("error", listeners.onError);
          }
        }
        pending.clear();
        if (winner) resolve(winner);
        else reject(err);
      };
      const attempt = (): void => {
        clearTimeout(stagger);
        if (done || next >= addresses.length) return;
        const a = addresses[next++]!;
        const localAddress = a.family === 6 ? external.ipv6 : external.ipv4;
        const socket = net.connect({
          host: a.address,
          port: target.port,
          family: a.family,
          allowHalfOpen: true,
          ...(localAddress && { localAddress }),
        });
        const onConnect = (): void => finish(undefined, socket);
        const onError = (err: NodeJS.ErrnoException): void => {
          pending.delete(socket);
          socket.destroy();
          errors.push(
            err.syscall === "bind"
              ? new DialError(
                  `cannot bind to the external address ${localAddress}: ${err.code}; is it an address of this host? (external: in the config)`,
                  Reply.GENERAL_FAILURE,
                  err.code,
                )
              : err,
          );
          if (next < addresses.length) attempt();
          else if (pending.size === 0) {
            finish(
              errors.length === 1
                ? errors[0]!
                : new AggregateError(errors, `every address of ${target.host} failed`),
            );
          }
        };
        pending.set(socket, { onConnect, onError });
        socket.once("connect", onConnect);
        socket.once("error", onError);
        if (next < addresses.length) stagger = setTimeout(attempt, delay);
      };
      const timer =
        options.timeoutMs && options.timeoutMs > 0
          ? setTimeout(
              () =>
                finish(
                  new DialError(
                    `connect to ${formatAddress(target)} timed out after ${options.timeoutMs} ms`,
                    Reply.TTL_EXPIRED,
                    "ETIMEDOUT",
                  ),
                ),
              options.timeoutMs,
            )
          : undefined;
      const onAbort = (): void => finish(new DialError("dial aborted", Reply.GENERAL_FAILURE, "ABORT_ERR"));
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      attempt();
    });
  }
}
