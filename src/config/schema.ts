import { z } from "zod";
import { logSchema } from "../observe/log-config.js";
import { type AdminSettings, adminSchema } from "./admin.js";
import { durationSchema as duration, via } from "./fields.js";
import { listenEntrySchema } from "./listen-schema.js";
import { quotaSchema } from "./quota-schema.js";
import type { RouteTable } from "./routes.js";
import { chainsSchema, externalSchema, resolveSchema, upstreamsSchema } from "./routes-schema.js";
import { clientRulesSchema, groupsSchema, rateSchema, requestRulesSchema } from "./rules-schema.js";
import { parsePortRange } from "./units.js";

const portRange = z.string().transform(via(parsePortRange));

export const authMethodSchema = z.enum(["none", "userpass", "gssapi"]);
export type AuthMethodName = z.infer<typeof authMethodSchema>;

/** Users in an LDAP directory: a search as the service account, then a bind as the user. */
const ldapSchema = z.strictObject({
  url: z.string().regex(/^ldaps?:\/\//, "must be an ldap:// or ldaps:// URL"),
  /** The service account that looks users up. */
  bindDn: z.string().min(1),
  /** A file holding its password (relative to the configuration file). */
  bindPasswordFile: z.string().min(1),
  /** Where users are searched (the whole subtree). */
  base: z.string().min(1),
  /** `{user}` is the login name, escaped as RFC 4515 requires. */
  filter: z.string().includes("{user}", { message: "must contain {user}" }).default("(uid={user})"),
  /** The user's attribute listing their groups' DNs; a group's name is its first RDN value. */
  groupAttribute: z.string().min(1).default("memberOf"),
  /** Or a search for the user's groups (`{dn}`: the user's DN); a group's name is its cn. */
  groupSearch: z
    .strictObject({ base: z.string().min(1), filter: z.string().min(1).default("(member={dn})") })
    .optional(),
  /** How long a successful login is remembered (a digest of the password, never the password). */
  cacheTtl: duration.default(60_000),
  cacheSize: z.number().int().positive().default(10_000),
  /** Connecting, and each request to the directory. */
  timeout: duration.default(5000),
});

/**
 * The configuration file (YAML or JSON). Command-line flags are mapped onto the same object
 * before validation, so the file and the flags can never disagree on meaning.
 */
export const configSchema = z.strictObject({
  /** Where to accept SOCKS connections: "HOST:PORT", or { address, tls, proxyProtocol } (docs/tls.md, docs/scale-out.md). */
  listen: z.array(listenEntrySchema).min(1).prefault(["127.0.0.1:1080"]),
  /** Methods offered to SOCKS5 clients, in order of preference. Default: userpass when users exist, else none. */
  auth: z.array(authMethodSchema).min(1).optional(),
  /** An htpasswd file with bcrypt hashes, or an LDAP directory (docs/ldap.md). */
  users: z.union([z.string(), z.strictObject({ ldap: ldapSchema })]).optional(),
  /** GSS-API (Kerberos, RFC 1961): offered when auth lists gssapi. */
  gssapi: z
    .strictObject({
      /** Keytab with the service key (relative to the configuration file). */
      keytab: z.string().min(1),
      /** Service principal, e.g. rcmd/proxy.example.com; without @REALM, the keytab's realm. Omitted: any key in the keytab. */
      principal: z.string().min(1).optional(),
      /** Protection levels accepted, most preferred first. */
      protection: z
        .array(z.enum(["confidentiality", "integrity", "none"]))
        .min(1)
        .default(["confidentiality", "integrity"]),
    })
    .optional(),
  /**
   * Serve HTTP proxy clients (CONNECT and absolute-URI requests) on the same ports as SOCKS
   * (docs/http-proxy.md); false answers them 400.
   */
  http: z.boolean().default(true),
  /** Required to listen on a non-loopback address without authentication. */
  allowOpenProxy: z.boolean().default(false),
  /** Ports for BIND listeners and UDP relay sockets, "LOW-HIGH". Default: the system picks. */
  relayPorts: portRange.optional(),
  /** Level, stderr format, file and syslog outputs (docs/logging.md). */
  log: logSchema,
  timeouts: z
    .strictObject({
      /** From accept until the request is read (greeting, authentication, request). */
      handshake: duration.default(10_000),
      /** Dialling the target. */
      connect: duration.default(10_000),
      /** A relay with no byte in either direction. */
      idle: duration.default(300_000),
      /** BIND: how long to wait for the peer's connection before a failure reply. */
      bind: duration.default(120_000),
      /** UDP fragment reassembly (RFC 1928 §7 requires at least 5 s). */
      fragment: duration.refine((ms) => ms >= 5000, "must be at least 5s (RFC 1928 section 7)").default(5000),
      /** On SIGINT/SIGTERM, how long live sessions may finish before they are cut. */
      drain: duration.default(10_000),
    })
    .prefault({}),
  /**
   * One address per family that outbound connections, BIND listeners and UDP relays bind to and
   * that BIND/UDP replies announce; one this host does not have (a NAT's public address) is
   * announced only (docs/routes.md, docs/bind-udp.md).
   */
  external: externalSchema.optional(),
  /** Address-family preference for names and literals dialled directly (docs/routes.md). */
  resolve: resolveSchema.default("system"),
  /** Named upstream proxies (docs/routes.md). */
  upstreams: upstreamsSchema.default({}),
  /** Named chains of upstreams; a hop may be a failover or round-robin group. */
  chains: chainsSchema.default({}),
  limits: z
    .strictObject({
      /** Established sessions (request read, command running) in total. Each takes two open files. */
      sessions: z.number().int().positive().default(10_000),
      /** Established sessions one client address may hold: a NAT'd office or a crawler is one address. */
      sessionsPerClient: z.number().int().positive().default(2000),
      /**
       * Connections still in the handshake (accept → request read), apart from sessions. When
       * full, the oldest handshake of the address holding the most is closed; above half full,
       * timeouts.handshake shortens toward 1 s.
       */
      handshakes: z.number().int().positive().default(1000),
      /** Sessions one authenticated user may have at once (default: no cap beyond the others). */
      sessionsPerUser: z.number().int().positive().optional(),
      bandwidth: z
        .strictObject({
          /** Bytes per second each direction, shared by all of one user's sessions: 10MiB/s. */
          perUser: rateSchema.optional(),
        })
        .prefault({}),
      /** Bytes per authenticated user per UTC day or month (docs/quotas.md). */
      quota: quotaSchema.optional(),
      /** UDP associations one client address may hold at once. */
      associationsPerClient: z.number().int().positive().default(16),
      /** Datagrams one association may have waiting (for a name lookup or the socket). */
      udpQueue: z.number().int().positive().default(64),
    })
    .prefault({}),
  /** Group name → user names, for `groups:` in rules (docs/policy.md). */
  groups: groupsSchema.default({}),
  /** Rules asked at accept, by client address. None: loopback clients only. First match wins. */
  clients: clientRulesSchema.optional(),
  /** Rules asked for every request. None: every destination. First match wins; no match denies. */
  rules: requestRulesSchema.optional(),
  /** A Unix socket for `ferry reload` (docs/policy.md); relative to the configuration file. */
  control: z.string().min(1).optional(),
  /**
   * Limits shared by several Ferry instances (docs/scale-out.md): session caps, bandwidth and
   * failed logins kept in Redis (or Valkey). Omitted: kept in this process. Fixed at start.
   */
  state: z
    .strictObject({
      /** redis://[:password@]host:port/db, or rediss:// for TLS. */
      redis: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL"),
      /** A file holding the password (relative to the configuration file); wins over the URL's. */
      passwordFile: z.string().min(1).optional(),
      /** Prefix of every key Ferry writes, so several fleets can share one Redis. */
      prefix: z.string().min(1).default("ferry:"),
    })
    .optional(),
  /** Processes sharing the listen addresses; "auto": one per core (docs/workers.md). Fixed at start. */
  workers: z.union([z.number().int().min(1).max(256), z.literal("auto")]).default(1),
  /** The admin HTTP listener: metrics, health, the admin page (docs/admin.md). Off when absent. Fixed at start. */
  admin: adminSchema.optional(),
});

export type FileConfig = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema> & {
  /** Users given on the command line (--user NAME:PASSWORD); never read from a file. */
  inlineUsers: { name: string; password: string }[];
  /** Upstreams and chains with their credentials resolved, set by loadConfig (docs/routes.md). */
  routes?: RouteTable;
  /** Where the rules are written (file and 1-based lines), set by loadConfig for logs and `ferry check`. */
  origin?: ConfigOrigin;
  /** The admin listener with its token read, set by loadConfig when `admin:` is given. */
  adminSettings?: AdminSettings;
};

export interface ConfigOrigin {
  file: string;
  clients: number[];
  rules: number[];
}
