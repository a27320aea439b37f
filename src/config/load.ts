import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { isLoopback } from "../policy/addresses.js";
import { resolveAdmin } from "./admin.js";
import { sourceLines } from "./lines.js";
import type { ListenTls } from "./listen-schema.js";
import { quotaStateFile } from "./quota-schema.js";
import { loadRoutes, RouteConfigError } from "./routes.js";
import { type Config, configSchema, type FileConfig } from "./schema.js";

/** A configuration that cannot be used, with every problem on its own line. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export interface ConfigSources {
  /** A YAML or JSON file. */
  file?: string;
  /** Values from command-line flags; they win over the file. */
  overrides?: Partial<FileConfig>;
  inlineUsers?: { name: string; password: string }[];
}

export async function loadConfig(sources: ConfigSources = {}): Promise<Config> {
  let fromFile: Record<string, unknown> = {};
  let lines: ReturnType<typeof sourceLines> | undefined;
  if (sources.file) {
    let text: string;
    try {
      text = await readFile(sources.file, "utf8");
    } catch (err) {
      throw new ConfigError(`${sources.file}: cannot read the configuration file: ${(err as Error).message}`);
    }
    fromFile = parseConfigText(text, sources.file);
    lines = sourceLines(text);
  }
  const merged = { ...fromFile, ...definedOnly(sources.overrides ?? {}) };
  const config = validateConfig(merged, sources.file ?? "command line", lines?.lineOf);
  const full: Config = { ...config, inlineUsers: sources.inlineUsers ?? [] };
  // Paths in a file are relative to the file, as people expect.
  if (sources.file && typeof full.users === "string" && fromFile.users === full.users) {
    full.users = path.resolve(path.dirname(sources.file), full.users);
  }
  const fileLdap = (fromFile.users as { ldap?: { bindPasswordFile?: unknown } } | undefined)?.ldap;
  if (
    sources.file &&
    typeof full.users === "object" &&
    fileLdap?.bindPasswordFile === full.users.ldap.bindPasswordFile
  ) {
    const bindPasswordFile = path.resolve(path.dirname(sources.file), full.users.ldap.bindPasswordFile);
    full.users = { ldap: { ...full.users.ldap, bindPasswordFile } };
  }
  const fileGssapi = fromFile.gssapi as { keytab?: unknown } | undefined;
  if (sources.file && full.gssapi && fileGssapi?.keytab === full.gssapi.keytab) {
    full.gssapi = { ...full.gssapi, keytab: path.resolve(path.dirname(sources.file), full.gssapi.keytab) };
  }
  const fileState = fromFile.state as { passwordFile?: unknown } | undefined;
  if (sources.file && full.state?.passwordFile && fileState?.passwordFile === full.state.passwordFile) {
    const passwordFile = path.resolve(path.dirname(sources.file), full.state.passwordFile);
    full.state = { ...full.state, passwordFile };
  }
  // TLS files of listeners written in the file (not --listen flags) are relative to it too.
  if (sources.file && fromFile.listen !== undefined && merged.listen === fromFile.listen) {
    const dir = path.dirname(sources.file);
    full.listen = full.listen.map((l) => (l.tls ? { ...l, tls: resolveTlsFiles(l.tls, dir) } : l));
  }
  if (sources.file && full.control && fromFile.control === full.control) {
    full.control = path.resolve(path.dirname(sources.file), full.control);
  }
  // The quota's state file, made absolute once: a reload must find the same file.
  const quota = full.limits.quota;
  if (quota)
    full.limits = { ...full.limits, quota: { ...quota, stateFile: quotaStateFile(quota, sources.file) } };
  if (sources.file && full.log.file) {
    full.log = {
      ...full.log,
      file: { ...full.log.file, path: path.resolve(path.dirname(sources.file), full.log.file.path) },
    };
  }
  if (sources.file && lines) {
    full.origin = {
      file: sources.file,
      clients: lines.itemLines("clients"),
      rules: lines.itemLines("rules"),
    };
  }
  checkSafety(full, sources.file ?? "command line");
  checkGroups(full, sources.file ?? "command line", lines?.lineOf);
  try {
    full.routes = await loadRoutes(full, {
      source: sources.file ?? "command line",
      baseDir: sources.file ? path.dirname(path.resolve(sources.file)) : undefined,
    });
  } catch (err) {
    throw err instanceof RouteConfigError ? new ConfigError(err.message) : err;
  }
  checkVia(full, sources.file ?? "command line", lines?.lineOf);
  if (full.admin) {
    try {
      full.adminSettings = await resolveAdmin(full.admin, {
        baseDir: sources.file ? path.dirname(path.resolve(sources.file)) : undefined,
      });
    } catch (err) {
      throw new ConfigError(`${sources.file ?? "command line"}: ${(err as Error).message}`);
    }
  }
  return full;
}

function resolveTlsFiles(tls: ListenTls, dir: string): ListenTls {
  const at = (p: string): string => path.resolve(dir, p);
  return {
    ...tls,
    cert: at(tls.cert),
    key: at(tls.key),
    ...(tls.clientCa && { clientCa: at(tls.clientCa) }),
  };
}

export function parseConfigText(text: string, source: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true }) ?? {};
  } catch (err) {
    throw new ConfigError(`${source}: not valid YAML or JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`${source}: the configuration must be a mapping of keys (listen:, auth:, ...)`);
  }
  return raw as Record<string, unknown>;
}

export function validateConfig(
  raw: unknown,
  source: string,
  lineOf?: (path: readonly PropertyKey[]) => number | undefined,
): Omit<Config, "inlineUsers"> {
  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const line = lineOf?.(issue.path);
    return `${source}${line ? `:${line}` : ""}: ${describeIssue(issue)}`;
  });
  throw new ConfigError(lines.join("\n"));
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const key = issue.path.length > 0 ? issue.path.join(".") : "(top level)";
  // A union (a listen entry: string or object) says only "Invalid input"; the option whose type
  // fits the value says what is wrong with it.
  if (issue.code === "invalid_union" && issue.errors.length > 0) {
    const fits = issue.errors.find(
      (errs) => !errs.some((e) => e.code === "invalid_type" && e.path.length === 0),
    );
    if (fits && fits.length > 0)
      return fits.map((e) => describeIssue({ ...e, path: [...issue.path, ...e.path] })).join("; ");
  }
  if (issue.code === "unrecognized_keys") {
    const parent = issue.path.join(".");
    return issue.keys
      .map((k) => {
        const where = parent ? `${parent}.${k}` : k;
        const hint = closest(k, knownKeys(issue.path));
        return `${where}: unknown key${hint ? ` (did you mean "${hint}"?)` : ""}`;
      })
      .join("; ");
  }
  return `${key}: ${issue.message}`;
}

function knownKeys(at: PropertyKey[]): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: walking zod's object shapes by key
  let schema: any = configSchema;
  const unwrap = (): void => {
    // Through optional/default wrappers, preprocess/transform pipes and into array elements;
    // in a union (a listen entry: string or object), into its object form.
    for (;;) {
      if (schema?.def?.innerType) schema = schema.def.innerType;
      else if (schema?.def?.type === "pipe")
        schema = schema.def.in?.def?.type === "transform" ? schema.def.out : schema.def.in;
      // biome-ignore lint/suspicious/noExplicitAny: as above
      else if (schema?.def?.type === "union") schema = schema.def.options.find((o: any) => o?.def?.in?.shape);
      else break;
    }
  };
  for (const part of at) {
    unwrap();
    if (typeof part === "number" && schema?.def?.element) schema = schema.def.element;
    else schema = schema?.shape?.[part as string];
  }
  unwrap();
  return Object.keys(schema?.shape ?? {});
}

/** The known key within two edits of a misspelt one. */
function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The methods actually offered: as configured, or userpass when users exist, else none. */
export function effectiveAuth(config: Config): string[] {
  if (config.auth) return config.auth;
  return config.users || config.inlineUsers.length > 0 ? ["userpass"] : ["none"];
}

/** Every group a rule names must be defined, or the rule could never match and nobody would know why. */
function checkGroups(
  config: Config,
  source: string,
  lineOf?: (path: readonly PropertyKey[]) => number | undefined,
): void {
  const problems: string[] = [];
  (config.rules ?? []).forEach((rule, i) => {
    for (const g of rule.groups ?? []) {
      // With a directory, a group not defined here is one of the directory's (docs/ldap.md).
      if (!(g in config.groups) && typeof config.users !== "object") {
        const line = lineOf?.(["rules", i]);
        const known = Object.keys(config.groups);
        problems.push(
          `${source}${line ? `:${line}` : ""}: rules.${i}.${rule.action}.groups: group "${g}" is not defined; ` +
            (known.length
              ? `defined groups: ${known.join(", ")}`
              : "define it under groups: { NAME: [user, ...] }"),
        );
      }
    }
  });
  if (problems.length > 0) throw new ConfigError(problems.join("\n"));
}

function checkSafety(config: Config, source: string): void {
  const auth = effectiveAuth(config);
  if (auth.includes("userpass") && !config.users && config.inlineUsers.length === 0) {
    throw new ConfigError(
      `${source}: auth: userpass is offered but no users are configured; add users: FILE (or --users FILE) or --user NAME:PASSWORD`,
    );
  }
  if (auth.includes("gssapi") && !config.gssapi) {
    throw new ConfigError(
      `${source}: auth: gssapi is offered but not configured; add gssapi: { keytab: FILE, principal: rcmd/HOST }`,
    );
  }
  if (auth.includes("none") && !config.allowOpenProxy) {
    // A listener that requires a verified client certificate requires a login of its own.
    const exposed = config.listen.filter((l) => !isLoopback(l.host) && !l.tls?.requireClientCert);
    if (exposed.length > 0) {
      const where = exposed
        .map((l) => (l.host.includes(":") ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`))
        .join(", ");
      throw new ConfigError(
        `${source}: refusing to listen on ${where} without authentication: anyone who reaches it could use this proxy. ` +
          "Require a login (--user NAME:PASSWORD or --users FILE, or a client certificate: tls.requireClientCert), listen on 127.0.0.1, or pass --allow-open-proxy (allowOpenProxy: true) if an open proxy is really intended",
      );
    }
  }
}

/** Every `via:` names an upstream, a chain or `direct`. */
function checkVia(
  config: Config,
  source: string,
  lineOf?: (path: readonly PropertyKey[]) => number | undefined,
): void {
  const known = [...(config.routes?.routes.keys() ?? [])];
  const problems: string[] = [];
  (config.rules ?? []).forEach((rule, i) => {
    if (rule.via === undefined || rule.via === "direct" || known.includes(rule.via)) return;
    const line = lineOf?.(["rules", i]);
    problems.push(
      `${source}${line ? `:${line}` : ""}: rules.${i}.${rule.action}.via: no upstream or chain named "${rule.via}"; ` +
        (known.length
          ? `known: direct, ${known.join(", ")}`
          : "define it under upstreams: or chains:, or write direct"),
    );
  });
  if (problems.length > 0) throw new ConfigError(problems.join("\n"));
}
