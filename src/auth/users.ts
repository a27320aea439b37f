import { createHmac, randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { type BcryptPool, sharedBcryptPool } from "./bcrypt-pool.js";
import type { HtpasswdEntry } from "./htpasswd.js";
import type { LdapDirectory } from "./ldap.js";

type Verifier = { kind: "bcrypt"; hash: string; cost: number } | { kind: "digest"; digest: Buffer };

const CACHE_MS = 5 * 60_000;
/** How many recent top-cost check times are kept to pad cheaper failures with. */
const SAMPLES = 16;
const BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A well-formed bcrypt hash of random bytes at `cost`: checking it costs what a real one does, and no password matches it. */
export function decoyHash(cost: number): string {
  const chars = [...randomBytes(53)].map((b) => BCRYPT_ALPHABET[b & 63]).join("");
  return `$2b$${String(cost).padStart(2, "0")}$${chars}`;
}

/**
 * The users a server accepts. Plain passwords given on the command line are kept only as keyed
 * digests and compared in constant time; file users are bcrypt hashes, checked on worker threads
 * (bcrypt-pool.ts). A successful bcrypt check is remembered (as a keyed digest) for a few minutes
 * so a client opening many connections does not pay bcrypt on each.
 *
 * A refusal takes as long whether the name exists or not, whatever the hashes' costs (a file may
 * mix `htpasswd -B` at cost 5 with `ferry users add` at cost 10, and bcrypt doubles per step):
 * - an unknown name, or a wrong password for a command-line user when the file has hashes, is
 *   checked against a decoy hash at the file's highest cost;
 * - a user with a cheaper hash has its failure held until it has taken as long as a top-cost
 *   check: the worker's time for one of the last top-cost checks, picked at random so the held
 *   times spread as real ones do.
 * The decoy alone would leave each cheaper user telling; padding alone has nothing to measure
 * until a top-cost check has run (the first cheaper failure then runs the decoy to measure one).
 * Only the time bcrypt itself takes is padded: every failing path waits for a worker once.
 */
export class UserDatabase {
  private readonly users = new Map<string, Verifier>();
  private readonly key = randomBytes(32);
  private readonly verified = new Map<string, { digest: Buffer; until: number }>();
  /** The highest bcrypt cost among the users and a decoy hash at it; none when no user has a hash. */
  private readonly top: { cost: number; decoy: string } | undefined;
  private readonly decoyDigest = randomBytes(32);
  /** Worker times (ms) of recent checks at the top cost, newest last. */
  private readonly topCostMs: number[] = [];
  /** The groups the directory gave users at their last login (bounded as its cache is). */
  private readonly directoryGroups = new Map<string, string[]>();

  /** `directory`: users from LDAP instead of a file; command-line users are still checked first. */
  constructor(
    fileUsers: HtpasswdEntry[] = [],
    inlineUsers: { name: string; password: string }[] = [],
    private readonly pool: BcryptPool = sharedBcryptPool(),
    readonly directory?: LdapDirectory,
  ) {
    // htpasswd.ts accepts only $2a$/$2b$/$2y$ hashes with two cost digits.
    for (const u of fileUsers)
      this.users.set(u.name, { kind: "bcrypt", hash: u.hash, cost: Number(u.hash.slice(4, 6)) });
    for (const u of inlineUsers)
      this.users.set(u.name, { kind: "digest", digest: this.digest(u.name, u.password) });
    // Of the users left: a command-line user may share a name with a file user and replace it.
    let cost: number | undefined;
    for (const v of this.users.values()) if (v.kind === "bcrypt") cost = Math.max(cost ?? 0, v.cost);
    this.top = cost === undefined ? undefined : { cost, decoy: decoyHash(cost) };
  }

  get size(): number {
    return this.users.size;
  }

  /** Whether the user exists (with a directory: whether it had them when last asked). */
  has(name: string): boolean {
    return this.users.has(name) || (this.directory?.known(name) ?? false);
  }

  /** The directory's groups of a user who has logged in (none without a directory). */
  groupsOf(name: string): string[] | undefined {
    return this.directory ? this.directoryGroups.get(name) : undefined;
  }

  names(): string[] {
    return [...this.users.keys()];
  }

  private digest(name: string, password: string): Buffer {
    return createHmac("sha256", this.key).update(name).update("\0").update(password).digest();
  }

  /**
   * Rejects only when the check could not be made (too many pending, a worker died, the
   * directory unreachable). The one check every login goes through (SOCKS5 and HTTP alike).
   */
  async verify(name: string, password: string): Promise<boolean> {
    const v = this.users.get(name);
    if (this.directory && v === undefined) return this.verifyInDirectory(this.directory, name, password);
    const given = this.digest(name, password);
    const top = this.top;
    // Digests only: one constant-time comparison on every path (the decoy digest matches nothing).
    if (!top) return timingSafeEqual(given, v?.kind === "digest" ? v.digest : this.decoyDigest);
    if (v?.kind === "digest" && timingSafeEqual(given, v.digest)) return true;
    if (v?.kind !== "bcrypt") {
      // An unknown name, or a command-line user's wrong password: what a top-cost user costs.
      await this.bcrypt(password, top.decoy, top.cost);
      return false;
    }
    const cached = this.verified.get(name);
    if (cached && cached.until > Date.now() && timingSafeEqual(given, cached.digest)) return true;
    const { ok, ms } = await this.bcrypt(password, v.hash, v.cost);
    if (ok) {
      this.verified.set(name, { digest: given, until: Date.now() + CACHE_MS });
      return true;
    }
    if (v.cost < top.cost) await this.padToTopCost(password, ms, top);
    return false;
  }

  private async verifyInDirectory(
    directory: LdapDirectory,
    name: string,
    password: string,
  ): Promise<boolean> {
    const answer = await directory.verify(name, password);
    if (!answer.ok) return false;
    this.directoryGroups.delete(name);
    this.directoryGroups.set(name, answer.groups ?? []);
    if (this.directoryGroups.size > 10_000)
      this.directoryGroups.delete(this.directoryGroups.keys().next().value!);
    return true;
  }

  private async bcrypt(password: string, hash: string, cost: number) {
    const result = await this.pool.compare(password, hash);
    if (cost === this.top?.cost) {
      this.topCostMs.push(result.ms);
      if (this.topCostMs.length > SAMPLES) this.topCostMs.shift();
    }
    return result;
  }

  /** Holds a failure that spent `spentMs` in bcrypt until it has cost what a top-cost check does. */
  private async padToTopCost(password: string, spentMs: number, top: { cost: number; decoy: string }) {
    if (this.topCostMs.length === 0) {
      await this.bcrypt(password, top.decoy, top.cost);
      return;
    }
    const target = this.topCostMs[randomInt(this.topCostMs.length)]!;
    if (target > spentMs) await sleep(target - spentMs);
  }
}
