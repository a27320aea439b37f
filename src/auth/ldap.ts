import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Client, InvalidCredentialsError, ResultCodeError, SizeLimitExceededError } from "ldapts";
import { fillFilter, firstRdnValue } from "./ldap-filter.js";

export interface LdapOptions {
  /** ldap:// or ldaps:// */
  url: string;
  /** The service account that looks users up. */
  bindDn: string;
  bindPassword: string;
  /** Where users are searched (subtree). */
  base: string;
  /** The search for a user; `{user}` is the login name, escaped (RFC 4515). */
  filter: string;
  /** The user's attribute naming their groups (DNs, e.g. memberOf); a group is its first RDN's value. */
  groupAttribute: string;
  /** Or a search for the user's groups: `{dn}` is the user's DN, `{user}` the name; each group by its `cn`. */
  groupSearch?: { base: string; filter: string };
  /** How long a successful login is remembered (ms); 0: never. */
  cacheTtl: number;
  /** Logins remembered at most. */
  cacheSize: number;
  /** Connecting and each operation (ms). */
  timeout: number;
}

/** The directory could not answer (down, unreachable, the service account refused): fail closed. */
export class DirectoryError extends Error {
  override name = "DirectoryError";
}

export interface DirectoryAnswer {
  ok: boolean;
  /** The user's groups, on success. */
  groups?: string[];
  /** Whether the directory has this user (for the log: unknown user or wrong password). */
  known: boolean;
}

interface Remembered {
  digest: Buffer;
  groups: string[];
  until: number;
}

/**
 * Users in an LDAP directory (ldapts). A login is a search, as the service account, for the one
 * entry the filter finds, then a bind as that entry with the password given; the user's groups
 * come from an attribute of the entry or a group search. A success is remembered for cacheTtl
 * as a keyed digest of the password (never the password), in a bounded map, so a client opening
 * many connections does not cost the directory a bind each. When the directory cannot answer,
 * the login fails (DirectoryError): nothing is let in unchecked.
 */
export class LdapDirectory {
  private readonly key = randomBytes(32);
  private readonly cache = new Map<string, Remembered>();
  /** Names the directory had (or not) at their last lookup, bounded like the cache. */
  private readonly seen = new Map<string, boolean>();

  constructor(private readonly options: LdapOptions) {}

  get url(): string {
    return this.options.url;
  }

  /** Whether the directory had `name` when last asked (false when never asked). */
  known(name: string): boolean {
    return this.seen.get(name) ?? false;
  }

  async verify(name: string, password: string): Promise<DirectoryAnswer> {
    // An empty password binds anonymously (RFC 4513 5.1.2) and would "succeed": never try it.
    if (name === "" || password === "") return { ok: false, known: this.known(name) };
    const digest = createHmac("sha256", this.key).update(name).update("\0").update(password).digest();
    const hit = this.cache.get(name);
    if (hit && hit.until > Date.now() && timingSafeEqual(hit.digest, digest)) {
      return { ok: true, groups: hit.groups, known: true };
    }
    const answer = await this.ask(name, password);
    this.remember(this.seen, name, answer.known);
    if (answer.ok && this.options.cacheTtl > 0) {
      this.remember(this.cache, name, {
        digest,
        groups: answer.groups!,
        until: Date.now() + this.options.cacheTtl,
      });
    } else if (!answer.ok) {
      this.cache.delete(name);
    }
    return answer;
  }

  /** Sets `key` as the newest entry of `map`, dropping the oldest beyond cacheSize. */
  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    if (map.size > this.options.cacheSize) map.delete(map.keys().next().value!);
  }

  private async ask(name: string, password: string): Promise<DirectoryAnswer> {
    const o = this.options;
    const client = new Client({ url: o.url, timeout: o.timeout, connectTimeout: o.timeout, strictDN: false });
    const step = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
      try {
        return await run();
      } catch (err) {
        if (err instanceof ResultCodeError) {
          throw new DirectoryError(`LDAP directory ${o.url}: ${what} refused: ${err.message}`);
        }
        throw new DirectoryError(
          `LDAP directory ${o.url} is unreachable (${what}: ${(err as Error).message})`,
        );
      }
    };
    try {
      await step("the service account's bind", () => client.bind(o.bindDn, o.bindPassword));
      const filter = fillFilter(o.filter, { user: name });
      const attributes = o.groupSearch ? ["1.1"] : [o.groupAttribute];
      let entries: Awaited<ReturnType<Client["search"]>>["searchEntries"];
      try {
        ({ searchEntries: entries } = await client.search(o.base, {
          scope: "sub",
          filter,
          attributes,
          sizeLimit: 2,
        }));
      } catch (err) {
        // Two or more entries match: the filter does not name one user. Refused, not guessed.
        if (err instanceof SizeLimitExceededError) return { ok: false, known: false };
        return await step("the user search", () => Promise.reject(err));
      }
      if (entries.length !== 1) return { ok: false, known: false };
      const dn = entries[0]!.dn;
      try {
        await client.bind(dn, password);
      } catch (err) {
        if (err instanceof InvalidCredentialsError) return { ok: false, known: true };
        await step("the user's bind", () => Promise.reject(err));
      }
      let groups: string[];
      if (o.groupSearch) {
        // Back as the service account: the user may not read the groups.
        await step("the service account's bind", () => client.bind(o.bindDn, o.bindPassword));
        const gs = o.groupSearch;
        const { searchEntries } = await step("the group search", () =>
          client.search(gs.base, {
            scope: "sub",
            filter: fillFilter(gs.filter, { dn, user: name }),
            attributes: ["cn"],
          }),
        );
        groups = searchEntries.flatMap((e) => values(e.cn));
      } else {
        groups = values(entries[0]![o.groupAttribute]).map(firstRdnValue);
      }
      return { ok: true, groups: [...new Set(groups)], known: true };
    } finally {
      await client.unbind().catch(() => {});
    }
  }
}

/** An attribute's values as strings (ldapts gives a string, a list, or Buffers). */
function values(v: unknown): string[] {
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => (Buffer.isBuffer(x) ? x.toString("utf8") : String(x)));
}
