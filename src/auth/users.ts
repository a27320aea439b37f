import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import bcrypt from "bcryptjs";
import type { HtpasswdEntry } from "./htpasswd.js";

type Verifier = { kind: "bcrypt"; hash: string } | { kind: "digest"; digest: Buffer };

/** A hash no password matches, compared against when the user is unknown so timing says nothing. */
const DECOY_HASH = "$2b$10$5VIf9p3Q/8heW2gFMDesLOptsQ5F1JGgeDAkN2fQ6Y2Agrz1XhRTS";
const CACHE_MS = 5 * 60_000;

/**
 * The users a server accepts. Plain passwords given on the command line are kept only as keyed
 * digests and compared in constant time; file users are bcrypt hashes. A successful bcrypt check
 * is remembered (as a keyed digest) for a few minutes so a client opening many connections does
 * not pay bcrypt on each.
 */
export class UserDatabase {
  private readonly users = new Map<string, Verifier>();
  private readonly key = randomBytes(32);
  private readonly verified = new Map<string, { digest: Buffer; until: number }>();
  private readonly hasBcryptUsers: boolean;
  private readonly decoyDigest = randomBytes(32);

  constructor(fileUsers: HtpasswdEntry[] = [], inlineUsers: { name: string; password: string }[] = []) {
    for (const u of fileUsers) this.users.set(u.name, { kind: "bcrypt", hash: u.hash });
    for (const u of inlineUsers)
      this.users.set(u.name, { kind: "digest", digest: this.digest(u.name, u.password) });
    this.hasBcryptUsers = [...this.users.values()].some((v) => v.kind === "bcrypt");
  }

  get size(): number {
    return this.users.size;
  }

  has(name: string): boolean {
    return this.users.has(name);
  }

  names(): string[] {
    return [...this.users.keys()];
  }

  private digest(name: string, password: string): Buffer {
    return createHmac("sha256", this.key).update(name).update("\0").update(password).digest();
  }

  async verify(name: string, password: string): Promise<boolean> {
    const v = this.users.get(name);
    const given = this.digest(name, password);
    if (!v) {
      // Spend what a known user would cost, so the time of a refusal does not reveal which
      // names exist: a bcrypt check when any user has a hash, else one digest comparison.
      if (this.hasBcryptUsers) await bcrypt.compare(password, DECOY_HASH);
      else timingSafeEqual(given, this.decoyDigest);
      return false;
    }
    if (v.kind === "digest") return timingSafeEqual(given, v.digest);
    const cached = this.verified.get(name);
    if (cached && cached.until > Date.now() && timingSafeEqual(given, cached.digest)) return true;
    const ok = await bcrypt.compare(password, v.hash);
    if (ok) this.verified.set(name, { digest: given, until: Date.now() + CACHE_MS });
    return ok;
  }
}
