import type { AuthMethod } from "../auth/method.js";
import type { UserDatabase } from "../auth/users.js";
import type { Config } from "../config/schema.js";
import type { Outbound } from "../dial/outbound.js";
import type { Policy } from "../policy/policy.js";
import type { ProtectionName } from "../protocol/gssapi.js";
import type { ServerState } from "./state.js";
import type { ListenerTls } from "./tls-listener.js";

/**
 * Everything a session needs, as one immutable snapshot. A reload builds a new snapshot; a
 * session keeps the one it started with.
 */
export interface ServerContext {
  config: Config;
  users: UserDatabase;
  /** Methods offered to SOCKS5 clients, most preferred first. */
  methods: AuthMethod[];
  policy: Policy;
  /** The one way out: every target, datagram and BIND peer is decided and carried by it. */
  outbound: Outbound;
  /** Limits, login throttling and decision events; shared by every context across reloads. */
  state: ServerState;
  /** TLS listeners by listen key ("host:port" as configured), certificates read at build time. */
  tls: ReadonlyMap<string, ListenerTls>;
}

/** What one session did, emitted once when it ends: the source of the log line and the metrics. */
export interface SessionRecord {
  id: number;
  client: string;
  clientPort: number;
  /** The balancer that relayed the connection ("host:port"), when a PROXY header named the client. */
  proxy?: string;
  protocol?: "socks4" | "socks4a" | "socks5" | "http" | "unknown";
  /** The TLS version, when the connection came to a TLS listener (docs/tls.md). */
  tls?: string;
  method?: string;
  user?: string;
  /** The user's groups from the directory (LDAP), as rules match them. */
  groups?: string[];
  /** GSSAPI: the protection level agreed (none, integrity, confidentiality); `user` is the principal. */
  protection?: ProtectionName;
  /** SOCKS4 USERID: what the client claims, not verified. */
  ident?: string;
  command?: string;
  target?: string;
  /** The address the target name resolved to and was connected to. */
  remote?: string;
  /** BND.ADDR:BND.PORT reported to the client. */
  bound?: string;
  /** Reply code sent (SOCKS5 REP or SOCKS4 CD), and its name. */
  reply?: number;
  replyName?: string;
  /** HTTP: the status the client received (the target's, for a forwarded request). */
  status?: number;
  rule?: string;
  /** CONNECT and BIND: bytes relayed each way; UDP: payload bytes of the datagrams relayed. */
  bytesUp: number;
  bytesDown: number;
  /** BIND: the peer that connected to the announced port. */
  peer?: string;
  /** BIND: connections turned away because they came from another address than the request named. */
  peersRefused?: number;
  /** UDP: datagrams relayed client → destinations, and destinations → client. */
  datagramsUp?: number;
  datagramsDown?: number;
  /** UDP: datagrams not relayed, counted by reason. */
  datagramsDropped?: Record<string, number>;
  startedAt: number;
  durationMs: number;
  /** From accept until the request was read (greeting, authentication, request). */
  handshakeMs?: number;
  /** The route the admitting rule names: `direct`, or an upstream or chain name. */
  route?: string;
  /** CONNECT: from the request until the target answered or the dial failed (name lookup included). */
  dialMs?: number;
  /** The policy refused the request (`rule` names which rule). */
  denied?: boolean;
  /** What ended the session, when it was not a clean close. */
  reason?: string;
}
