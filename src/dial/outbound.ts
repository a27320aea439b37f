import type { Route } from "../config/routes.js";
import type { Config } from "../config/schema.js";
import { normalizeIp } from "../policy/addresses.js";
import { type Admission, admitAddresses, admitTarget } from "../policy/admit.js";
import type { Decision, Policy, RequestQuery } from "../policy/policy.js";
import { addressOf, isUnspecified, type SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import { familyOf } from "./announce.js";
import type { ChainDialer } from "./chain.js";
import type { Dialed, DialOptions } from "./dialer.js";
import type { DirectDialer } from "./direct.js";
import { DialError, errorCode } from "./errors.js";
import { orderAddresses, type Resolved, type ResolvePreference } from "./family.js";
import { type BindOptions, type Listening, listenDirect, listenUpstream } from "./outbound-bind.js";
import { type DatagramEvents, DatagramRouter } from "./outbound-udp.js";
import { Resolver } from "./resolver.js";

export type Lookup = (host: string) => Promise<Resolved[]>;

/** One decision the outbound path made, for the session's decision events. */
export interface Decided {
  decision: Decision;
  ip?: string;
}

/** Refused by policy: reply 0x02, with every decision that led there. */
export class Refused extends DialError {
  override name = "Refused";
  constructor(
    message: string,
    readonly decision: Decision,
    readonly decided: readonly Decided[],
  ) {
    super(message, Reply.NOT_ALLOWED);
  }
}

const issued = Symbol("admitted");

/**
 * A target the policy admitted, with what will be sent: the name (an upstream resolves it) or the
 * addresses the admitting rule allowed, in the order they are tried. Only `Outbound.admit` makes
 * one, so nothing can be dialled that was not decided.
 */
export class Admitted {
  constructor(
    key: typeof issued,
    readonly query: RequestQuery,
    /** The rule that admits: its route, caps and bandwidth apply. */
    readonly decision: Decision,
    /** Undefined when the name itself is handed to the upstream. */
    readonly addresses: readonly Resolved[] | undefined,
    readonly decided: readonly Decided[],
  ) {
    if (key !== issued) throw new Error("an Admitted comes only from Outbound.admit");
  }

  /** What the route is asked for: the name, or the first address (an upstream tries only one). */
  get target(): SocksAddress {
    const first = this.addresses?.[0];
    return first ? addressOf(first.address, this.query.target.port) : this.query.target;
  }
}

export interface OutboundOptions {
  /** The server's resolver (bounded per client and in total), shared across reloads. */
  resolver?: Resolver;
  /** Family preference when a rule does not say (`resolve:` in the configuration). */
  resolve?: ResolvePreference;
}

/**
 * The one way out. Every CONNECT target, every datagram and every BIND peer is decided here, by
 * src/policy/admit.ts, on what will actually be used; then the admitting rule's route carries
 * it: direct, or a chain of upstream proxies. Commands never open sockets to targets.
 */
export class Outbound {
  private readonly resolver: Resolver;

  constructor(
    readonly policy: Policy,
    readonly config: Config,
    private readonly direct: DirectDialer,
    readonly routes: ReadonlyMap<string, ChainDialer>,
    private readonly options: OutboundOptions = {},
  ) {
    this.resolver = options.resolver ?? new Resolver();
  }

  /** A route's chain dialer, or undefined for direct; an unknown name is refused, never sent direct. */
  chain(via: string | undefined): ChainDialer | undefined {
    if (via === undefined || via === "direct") return undefined;
    const route = this.routes.get(via);
    if (!route) {
      throw new DialError(
        `no upstream or chain named ${via}; define it under upstreams: or chains:`,
        Reply.GENERAL_FAILURE,
      );
    }
    return route;
  }

  readonly resolvesNames = (via: string | undefined): boolean => {
    const route = via === undefined || via === "direct" ? undefined : this.routes.get(via);
    return route ? lastHopResolvesNames(route.route) : false;
  };

  /**
   * Resolves a name through the server's bounded resolver (per client, within the time left);
   * failures carry the reply code for the client.
   */
  async lookup(host: string, options: DialOptions = {}): Promise<Resolved[]> {
    try {
      return await this.resolver.resolve(host, {
        ...(options.client !== undefined && { client: options.client }),
        ...(options.signal && { signal: options.signal }),
        ...(options.timeoutMs && options.timeoutMs > 0 && { timeoutMs: options.timeoutMs }),
      });
    } catch (err) {
      const code = errorCode(err);
      const reply =
        code === "ETIMEDOUT"
          ? Reply.TTL_EXPIRED
          : code === "ETOOMANY" || code === "EBUSY" || code === "ABORT_ERR"
            ? Reply.GENERAL_FAILURE
            : Reply.HOST_UNREACHABLE;
      throw new DialError(`cannot resolve ${host}: ${(err as Error).message ?? code}`, reply, code);
    }
  }

  /**
   * Decides `q.target` (resolving a name when the decision needs its addresses) and says what
   * will be sent. Throws Refused when policy says no, DialError when the name does not resolve.
   */
  async admit(
    q: RequestQuery,
    options: DialOptions = {},
    /** A cache of the caller's (a UDP association's) instead of a lookup per call. */
    resolve: (host: string) => Promise<Resolved[]> = (host) => this.lookup(host, options),
  ): Promise<Admitted> {
    const first = admitTarget(this.policy, q, this.resolvesNames);
    let admission: Admission;
    if ("resolve" in first) {
      let found: Resolved[];
      try {
        found = await resolve(q.target.host);
      } catch (err) {
        const failure =
          err instanceof DialError
            ? err
            : new DialError(
                `cannot resolve ${q.target.host}: ${errorCode(err) ?? err}`,
                Reply.HOST_UNREACHABLE,
                errorCode(err),
              );
        if (first.byName.verdict === "deny" && failure.reply === Reply.HOST_UNREACHABLE) {
          // Nothing leaves either way; say why an upstream route was not taken for the name.
          throw new DialError(
            `${failure.message}; as an unresolved name it was refused by rule ${first.byName.rule}: ${first.byName.reason}`,
            failure.reply,
            failure.code,
          );
        }
        throw failure;
      }
      admission = admitAddresses(
        this.policy,
        q,
        found.map((a) => a.address),
      );
    } else {
      admission = first;
    }
    if (admission.verdict === "deny")
      throw new Refused(refusalText(q, admission), admission.decision, admission.denied);
    const decision = admission.decision;
    const decided: Decided[] = [
      admission.kind === "name" ? { decision } : { decision, ip: admission.addresses[0]! },
    ];
    if (admission.kind === "name") return new Admitted(issued, q, decision, undefined, decided);
    const route = this.chain(decision.route);
    let candidates: Resolved[] = admission.addresses.map((address) => ({
      address,
      family: familyOf(address),
    }));
    // SOCKS4 carries IPv4 only.
    if (route?.route.hops.at(-1)?.members.some((u) => u.protocol === "socks4")) {
      candidates = candidates.filter((a) => a.family === 4);
    }
    const preference = decision.resolve ?? this.options.resolve ?? "system";
    const ordered = orderAddresses(candidates, preference);
    if (ordered.length === 0)
      throw familyError(q.target, admission.addresses, preference, route !== undefined);
    return new Admitted(issued, q, decision, ordered, decided);
  }

  /**
   * BIND through the route the command's decision names: its listener announced, and its one
   * peer decided on arrival. `controlLocal` is where the client reached us.
   */
  async bind(
    q: RequestQuery,
    decision: Decision,
    options: DialOptions & BindOptions & { controlLocal: string },
  ): Promise<Listening> {
    const route = this.chain(decision.route);
    if (route) return listenUpstream(this.policy, q, route, options);
    const expected = await this.expectedPeers(q.target, options);
    return listenDirect(this.policy, q, this.config, options.controlLocal, expected, options);
  }

  /** Where a BIND peer may come from: any (undefined) for all zeros, else the address or the name's. */
  private async expectedPeers(target: SocksAddress, options: DialOptions): Promise<Set<string> | undefined> {
    if (isUnspecified(target)) return undefined;
    if (target.type !== "domain") return new Set([normalizeIp(target.host)]);
    const all = await this.lookup(target.host, options);
    return new Set(all.map((a) => normalizeIp(a.address)));
  }

  /**
   * UDP ASSOCIATE: a router that decides and sends each datagram. The command's own route (an
   * upstream's association) is opened before the reply, so its failure is the request's.
   */
  async associate(
    q: RequestQuery,
    decision: Decision,
    events: DatagramEvents,
    options: DialOptions = {},
  ): Promise<DatagramRouter> {
    const router = new DatagramRouter(this, q, events);
    try {
      await router.open(decision.route, options);
    } catch (err) {
      router.close();
      throw err;
    }
    return router;
  }

  /** Connects to an admitted target through the admitting rule's route. */
  connect(admitted: Admitted, options: DialOptions = {}): Promise<Dialed> {
    const route = this.chain(admitted.decision.route);
    if (route) return route.dial(admitted.target, options);
    return this.direct.dial(admitted.query.target, admitted.addresses!, options);
  }
}

/** socks4a, socks5h and HTTP upstreams take names; a group resolves remotely only if all do. */
function lastHopResolvesNames(route: Route): boolean {
  return route.hops.at(-1)!.members.every((u) => u.protocol !== "socks4" && u.protocol !== "socks5");
}

function refusalText(q: RequestQuery, admission: Extract<Admission, { verdict: "deny" }>): string {
  const d = admission.decision;
  const addresses = admission.denied.filter((x) => x.ip !== undefined);
  if (q.target.type === "domain" && addresses.length > 0) {
    const each = addresses.map((x) => `${x.ip} by rule ${x.decision.rule}: ${x.decision.reason}`).join("; ");
    return `${q.target.host} resolves only to denied addresses: ${each}`;
  }
  return `denied by rule ${d.rule}: ${d.reason}`;
}

function familyError(
  target: SocksAddress,
  addresses: readonly string[],
  preference: ResolvePreference,
  upstream: boolean,
): DialError {
  const family = preference === "ipv4-only" || upstream ? "IPv4" : "IPv6";
  const why =
    upstream && preference !== "ipv6-only"
      ? "this route's SOCKS4 upstream carries IPv4 only"
      : `this route is resolve: ${preference}`;
  return target.type === "domain"
    ? new DialError(
        `${target.host} has no ${family} address (${addresses.join(", ")}) and ${why}`,
        Reply.HOST_UNREACHABLE,
      )
    : new DialError(
        `${target.host} is not an ${family} address and ${why}`,
        Reply.ADDRESS_TYPE_NOT_SUPPORTED,
      );
}
