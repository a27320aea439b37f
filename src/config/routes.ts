import { constants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";
import { type HopTls, TLS_PARAMS } from "../client/tls-options.js";
import { addressOf } from "../protocol/address.js";
import { findLoops } from "./loops.js";
import type { HopConfig, UpstreamConfig } from "./routes-schema.js";
import { readSecret, type Secret } from "./secret.js";
import type { HostPort } from "./units.js";

export type UpstreamProtocol = "socks4" | "socks4a" | "socks5" | "socks5h" | "http";

/** One upstream proxy, ready to dial: protocol, address and resolved credentials. */
export interface Upstream {
  name: string;
  protocol: UpstreamProtocol;
  host: string;
  port: number;
  user?: string;
  password?: Secret;
  /** Spoken to inside TLS; files are absolute paths, read for every connection. */
  tls?: HopTls;
}

/** A hop: one upstream, or several used in order with failover or in turn. */
export interface Hop {
  members: Upstream[];
  mode: "failover" | "round-robin";
  retryAfterMs: number;
}

/** What `via: NAME` selects: an upstream (a route of one hop) or a chain. */
export interface Route {
  name: string;
  hops: Hop[];
}

export interface RouteTable {
  upstreams: Map<string, Upstream>;
  /** Every name a rule may route through; upstreams appear as one-hop routes. */
  routes: Map<string, Route>;
}

/** The route keys as loadRoutes needs them. */
export interface RouteKeys {
  listen: HostPort[];
  upstreams: Record<string, UpstreamConfig>;
  chains: Record<string, HopConfig[]>;
}

export interface LoadRoutesOptions {
  /** Where the configuration came from, for messages. */
  source: string;
  /** Relative passwordFile paths are resolved against this (the config file's directory). */
  baseDir?: string;
  env?: NodeJS.ProcessEnv;
}

const SCHEMES: Record<string, UpstreamProtocol> = {
  "socks4:": "socks4",
  "socks4a:": "socks4a",
  "socks5:": "socks5",
  "socks5h:": "socks5h",
  "http:": "http",
};

/** The same protocols inside TLS (docs/tls.md): the URL's ca, cert, key and servername apply. */
const TLS_SCHEMES: Record<string, { protocol: UpstreamProtocol; port: number }> = {
  "socks5+tls:": { protocol: "socks5", port: 1080 },
  "socks5h+tls:": { protocol: "socks5h", port: 1080 },
  "https:": { protocol: "http", port: 443 },
};

const DEFAULT_FAILOVER_MS = 30_000;

/** Thrown for a route the configuration cannot use; one problem per line. */
export class RouteConfigError extends Error {
  override name = "RouteConfigError";
}

/**
 * Checks and resolves upstreams and chains: URLs, credentials from the environment or files,
 * names that hops refer to, and chains that would come back to one of our own listeners.
 */
export async function loadRoutes(keys: RouteKeys, options: LoadRoutesOptions): Promise<RouteTable> {
  const problems: string[] = [];
  const upstreams = new Map<string, Upstream>();
  for (const [name, spec] of Object.entries(keys.upstreams)) {
    try {
      upstreams.set(name, await resolveUpstream(name, spec, options));
    } catch (err) {
      problems.push(`upstreams.${name}: ${(err as Error).message}`);
    }
  }
  const routes = new Map<string, Route>();
  for (const u of upstreams.values()) {
    routes.set(u.name, {
      name: u.name,
      hops: [{ members: [u], mode: "failover", retryAfterMs: DEFAULT_FAILOVER_MS }],
    });
  }
  for (const [name, hops] of Object.entries(keys.chains)) {
    if (name === "direct") {
      problems.push(`chains.direct: "direct" means no upstream; give the chain another name`);
      continue;
    }
    if (keys.upstreams[name]) {
      problems.push(`chains.${name}: an upstream has the same name; rules could not tell them apart`);
      continue;
    }
    const resolved: Hop[] = [];
    hops.forEach((hop, i) => {
      const names = typeof hop === "string" ? [hop] : hop.any;
      const members: Upstream[] = [];
      for (const ref of names) {
        const u = upstreams.get(ref);
        if (u) members.push(u);
        else if (keys.chains[ref]) {
          problems.push(
            `chains.${name}[${i}]: ${ref} is a chain; chains do not nest, list its upstreams instead`,
          );
        } else if (!keys.upstreams[ref]) {
          const known = Object.keys(keys.upstreams);
          problems.push(
            `chains.${name}[${i}]: no upstream named ${ref}${known.length ? ` (upstreams: ${known.join(", ")})` : "; define it under upstreams:"}`,
          );
        }
      }
      if (typeof hop === "string")
        resolved.push({ members, mode: "failover", retryAfterMs: DEFAULT_FAILOVER_MS });
      else resolved.push({ members, mode: hop.mode, retryAfterMs: hop.retryAfter });
    });
    routes.set(name, { name, hops: resolved });
  }
  if (upstreams.has("direct"))
    problems.push(`upstreams.direct: "direct" means no upstream; give it another name`);

  for (const loop of await findLoops(keys.listen, [...upstreams.values()])) {
    const users = [...routes.values()]
      .filter((r) => r.hops.some((h) => h.members.some((m) => m.name === loop.upstream.name)))
      .map((r) => r.name)
      .filter((n) => n !== loop.upstream.name);
    problems.push(
      `upstreams.${loop.upstream.name}: ${loop.upstream.host}:${loop.upstream.port} is this server's own listen address ${loop.listen}; ` +
        `a route through it${users.length ? ` (chains: ${users.join(", ")})` : ""} would loop back into ferry. Point it at the real upstream proxy`,
    );
  }
  if (problems.length > 0)
    throw new RouteConfigError(problems.map((p) => `${options.source}: ${p}`).join("\n"));
  return { upstreams, routes };
}

async function resolveUpstream(
  name: string,
  spec: UpstreamConfig,
  options: LoadRoutesOptions,
): Promise<Upstream> {
  let url: URL;
  try {
    url = new URL(spec.url);
  } catch {
    throw new Error(
      `url: "${spec.url}" is not a URL; write it like socks5h://proxy.example:1080 or http://proxy.example:3128`,
    );
  }
  const secure = TLS_SCHEMES[url.protocol];
  const protocol = secure?.protocol ?? SCHEMES[url.protocol];
  if (!protocol) {
    throw new Error(
      `url: unknown scheme ${url.protocol.slice(0, -1)}; use socks4, socks4a, socks5, socks5h, http, or socks5+tls, socks5h+tls, https`,
    );
  }
  const tls = secure ? await upstreamTls(url, options) : undefined;
  if ((url.pathname && url.pathname !== "/") || (url.search && !secure) || url.hash) {
    throw new Error(
      `url: a proxy URL is only scheme://host:port${secure ? "?ca=FILE&cert=FILE&key=FILE&servername=NAME" : ""}; remove "${url.pathname}${secure ? "" : url.search}${url.hash}"`,
    );
  }
  if (url.password) {
    throw new Error(
      `url: the URL carries a password; move it out of the file: password: "\${VAR}" (from the environment) or passwordFile: PATH`,
    );
  }
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  if (!host) throw new Error(`url: no host in ${spec.url}`);
  let port = url.port ? Number(url.port) : undefined;
  if (port === undefined && secure) port = secure.port;
  if (port === undefined) {
    if (protocol === "http") throw new Error(`url: give the HTTP proxy's port, like http://${host}:3128`);
    port = 1080;
  }
  addressOf(host, port);

  const userFromUrl = url.username ? decodeURIComponent(url.username) : undefined;
  if (userFromUrl && spec.user) throw new Error("the user is given twice (in url and user:); keep one");
  const user = spec.user !== undefined ? expand(spec.user, "user", options.env ?? process.env) : userFromUrl;

  const password = await readSecret(
    { value: spec.password, file: spec.passwordFile },
    { value: "password", file: "passwordFile", noun: "password" },
    options,
  );
  if (password && (protocol === "socks4" || protocol === "socks4a")) {
    throw new Error(
      `${protocol} has no passwords (only a USERID, given as user:); remove the password or use socks5`,
    );
  }
  if (password && !user) throw new Error("a password needs a user: as well");
  if (protocol === "socks5" || protocol === "socks5h" || protocol === "http") {
    if (user !== undefined && Buffer.byteLength(user) > 255) throw new Error("user: at most 255 bytes");
    if (password && Buffer.byteLength(password.reveal()) > 255 && protocol !== "http") {
      throw new Error("password: at most 255 bytes (RFC 1929)");
    }
  }
  return {
    name,
    protocol,
    host,
    port,
    ...(user !== undefined && { user }),
    ...(password && { password }),
    ...(tls && { tls }),
  };
}

/**
 * The TLS parameters of an upstream URL: files relative to the configuration file, checked to be
 * readable now so that a typo fails the load rather than every connection.
 */
async function upstreamTls(url: URL, options: LoadRoutesOptions): Promise<HopTls> {
  const out: HopTls = {};
  for (const [name, value] of url.searchParams) {
    if (!(TLS_PARAMS as readonly string[]).includes(name))
      throw new Error(`url: unknown parameter ${name}=; TLS upstreams take ${TLS_PARAMS.join(", ")}`);
    if (!value) throw new Error(`url: ${name}= is empty`);
    if (name === "servername") {
      out.servername = value;
      continue;
    }
    const file = path.resolve(options.baseDir ?? process.cwd(), value);
    try {
      await access(file, constants.R_OK);
    } catch (err) {
      throw new Error(`url: ${name}=${value}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
    }
    out[name as "ca" | "cert" | "key"] = file;
  }
  if ((out.cert === undefined) !== (out.key === undefined))
    throw new Error("url: a client certificate needs both cert= and key=");
  // The URL without its parameters, so the checks below see scheme://host:port only.
  url.search = "";
  return out;
}

/** Replaces every ${NAME} with the environment variable; an unset or empty one is an error. */
export function expand(value: string, key: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined || v === "") {
      throw new Error(
        `${key}: the environment variable ${name} is not set (or empty); export it before starting ferry`,
      );
    }
    return v;
  });
}
