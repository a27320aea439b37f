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

  async dial(
    target: SocksAddress,
    addresses: readonly Resolved[],
    options: DialOptions = {},
  ): Promise<Dialed> {
    const socket = await this.connect(target, addresses, options);
    return {
      stream: socket,
      local: { host: socket.localAddress ?? "0.0.0.0", port: socket.localPort ?? 0 },
      remote: { host: socket.remoteAddress ?? addresses[0]!.address, port: socket.remotePort ?? target.port },
    };
  }

  /**
   * Happy Eyeballs by hand: Node's autoSelectFamily is off as soon as a localAddress is given, and
   * egress needs a different local address per family. An attempt starts when the previous one
   * fails or after the attempt delay; the first to connect wins and the others are dropped.
   */
  private connect(
    target: SocksAddress,
    addresses: readonly Resolved[],
    options: DialOptions,
  ): Promise<net.Socket> {
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
