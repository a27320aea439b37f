import { lookup as systemLookup } from "node:dns/promises";
import net from "node:net";
import { associate, type UdpAssociation } from "../client/associate.js";
import { type BindResult, bind } from "../client/bind.js";
import { type ClientOptions, establish } from "../client/chain.js";
import { handOver } from "../client/connect.js";
import { SocksError } from "../client/errors.js";
import type { ProxyHop } from "../client/proxy.js";
import type { Route, Upstream } from "../config/routes.js";
import type { External } from "../config/routes-schema.js";
import type { SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import type { Dialed, DialOptions } from "./dialer.js";
import { DialError } from "./errors.js";
import { orderAddresses, type Resolved, type ResolvePreference } from "./family.js";
import type { HopPicker } from "./hop-picker.js";

export interface ChainDialerOptions {
  /** The first hop is dialled from the external address of its family. */
  external?: External;
  /** Family preference for names resolved here (the first hop's, and targets of socks4/socks5 last hops). */
  resolve?: ResolvePreference;
  lookup?: (host: string) => Promise<Resolved[]>;
  /** Told of every upstream a dial went through (ok) and every one blamed for a failure. */
  onHop?: (result: HopResult) => void;
}

/** One upstream's part in one dial through a route. */
export interface HopResult {
  route: string;
  upstream: string;
  ok: boolean;
}

const defaultLookup = (host: string): Promise<Resolved[]> =>
  systemLookup(host, { all: true, verbatim: true });

/**
 * Reaches the target through a route of upstream proxies with the client library's chain
 * (one codec, one handshake implementation for client and server). A hop group's members are
 * tried in the picker's order; a member that fails is marked and the same dial goes on with the
 * next. A failure the last hop reports for the target is the target's and is passed on.
 */
export class ChainDialer {
  constructor(
    readonly route: Route,
    private readonly picker: HopPicker,
    private readonly options: ChainDialerOptions = {},
  ) {}

  /** CONNECT through the route to an admitted target: a name only when the last hop resolves it. */
  async dial(target: SocksAddress, options: DialOptions = {}): Promise<Dialed> {
    return this.through(options, async (hops, clientOptions) => {
      const chain = await establish(hops, "connect", target, clientOptions);
      chain.settle();
      return {
        stream: handOver(chain.io),
        local: { host: chain.bound.host, port: chain.bound.port },
        remote: { host: target.host, port: target.port },
      };
    });
  }

  /**
   * BIND on the last hop (which must speak SOCKS): resolves with the address the upstream listens
   * on, which is what our own first reply announces, and the peer once it connects.
   */
  bind(peer: SocksAddress, options: DialOptions = {}): Promise<BindResult> {
    return this.through(options, (hops, clientOptions) =>
      bind(hops, { ...clientOptions, peer: { host: peer.host, port: peer.port } }),
    );
  }

  /** A UDP association on the last hop (SOCKS5 only). */
  associate(options: DialOptions = {}): Promise<UdpAssociation> {
    return this.through(options, (hops, clientOptions) => associate(hops, clientOptions));
  }

  /**
   * Runs `step` over one choice of members per hop; when an upstream is at fault it is marked,
   * left out, and the step runs again with the next member. Bounded by the number of members.
   */
  private async through<T>(
    options: DialOptions,
    step: (hops: ProxyHop[], clientOptions: ClientOptions) => Promise<T>,
  ): Promise<T> {
    const excluded = new Set<string>();
    const budget = this.route.hops.reduce((n, h) => n + h.members.length, 0);
    let lastError: unknown;
    for (let attempt = 0; attempt < budget; attempt++) {
      const chosen: Upstream[] = [];
      for (const hop of this.route.hops) {
        const next = this.picker.candidates(hop).find((u) => !excluded.has(u.name));
        if (!next) throw this.failure(lastError);
        chosen.push(next);
      }
      try {
        const hops = await Promise.all(chosen.map((u, i) => this.proxyHop(u, i === 0)));
        const first = hops[0]!;
        const result = await step(hops, {
          timeout: options.timeoutMs ?? 0,
          signal: options.signal,
          allowHalfOpen: true,
          localAddress: net.isIPv6(first.host) ? this.options.external?.ipv6 : this.options.external?.ipv4,
        });
        for (const u of chosen) {
          this.picker.succeeded(u);
          this.options.onHop?.({ route: this.route.name, upstream: u.name, ok: true });
        }
        return result;
      } catch (err) {
        lastError = err;
        const culprit = blame(err, chosen.length);
        if (culprit === undefined) throw this.failure(err);
        this.picker.failed(chosen[culprit]!, this.route.hops[culprit]!);
        this.options.onHop?.({ route: this.route.name, upstream: chosen[culprit]!.name, ok: false });
        excluded.add(chosen[culprit]!.name);
      }
    }
    throw this.failure(lastError);
  }

  /** The client library's hop for an upstream; the first hop's name is resolved to pick the egress family. */
  private async proxyHop(u: Upstream, first: boolean): Promise<ProxyHop> {
    let host = u.host;
    if (first && !net.isIP(host) && this.options.external) {
      const found = orderAddresses(await (this.options.lookup ?? defaultLookup)(host), this.options.resolve);
      if (found[0]) host = found[0].address;
    }
    return {
      ...toProxyHop(u),
      host,
    };
  }

  failure(err: unknown): DialError {
    const where = `route ${this.route.name}`;
    if (err instanceof DialError) return err;
    if (err instanceof SocksError) {
      let reply: number = Reply.GENERAL_FAILURE;
      if (err.stage === "timeout") reply = Reply.TTL_EXPIRED;
      else if (err.stage === "request" && err.reply !== undefined && err.version === 5) reply = err.reply;
      return new DialError(`${where}: ${err.message}`, reply, err.code);
    }
    return new DialError(
      `${where}: ${(err as Error)?.message ?? "no upstream could be used"}`,
      Reply.GENERAL_FAILURE,
    );
  }
}

export function toProxyHop(u: Upstream): ProxyHop {
  const hop: ProxyHop = {
    version: u.protocol === "socks4" || u.protocol === "socks4a" ? 4 : 5,
    remoteDns: u.protocol !== "socks4" && u.protocol !== "socks5",
    host: u.host,
    port: u.port,
    ...(u.protocol === "http" && { http: true }),
  };
  if (u.user !== undefined) hop.username = u.user;
  if (u.password) hop.password = u.password.reveal();
  if (u.tls) hop.tls = u.tls;
  return hop;
}

/**
 * Which hop's member to mark as failed, or undefined when no upstream is at fault (the target
 * refused, the client went away, or it is not a proxy error at all).
 */
export function blame(err: unknown, hops: number): number | undefined {
  if (!(err instanceof SocksError)) return undefined;
  switch (err.stage) {
    case "aborted":
    case "accept":
      return undefined;
    case "connect":
    case "tls":
    case "negotiate":
    case "auth":
    case "timeout":
      return err.hop;
    case "request": {
      const last = err.hop === hops - 1;
      // No reply at all (closed, malformed): the hop itself is broken.
      if (err.reply === undefined) return err.hop;
      if (last) return undefined;
      // Refused by its rules: this hop will not carry us; otherwise the next proxy is unreachable.
      const refused = err.version === 5 ? err.reply === Reply.NOT_ALLOWED : false;
      return refused ? err.hop : err.hop + 1;
    }
  }
}
