import { randomBytes } from "node:crypto";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import bcrypt from "bcryptjs";

export interface HtpasswdEntry {
  name: string;
  hash: string;
}

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

/** Parses an htpasswd file; only bcrypt hashes are accepted (htpasswd -B, or `ferry users add`). */
export function parseHtpasswd(text: string, source: string): HtpasswdEntry[] {
  const entries: HtpasswdEntry[] = [];
  const seen = new Set<string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const colon = line.indexOf(":");
    const where = `${source}:${i + 1}`;
    if (colon <= 0) throw new Error(`${where}: expected NAME:HASH`);
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (!BCRYPT.test(hash)) {
      throw new Error(
        `${where}: user "${name}" does not have a bcrypt hash; re-create it with \`ferry users add ${source} ${name}\` or \`htpasswd -B\``,
      );
    }
    if (seen.has(name)) throw new Error(`${where}: user "${name}" appears twice`);
    seen.add(name);
    entries.push({ name, hash });
  });
  return entries;
}

export function formatHtpasswd(entries: HtpasswdEntry[]): string {
  return entries.map((e) => `${e.name}:${e.hash}\n`).join("");
}

export async function readHtpasswd(file: string): Promise<HtpasswdEntry[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return [];
    throw err;
  }
  return parseHtpasswd(text, file);
}

/** Replaces the file in one rename so a reader never sees half of it; mode 0600. */
export async function writeHtpasswdAtomically(file: string, entries: HtpasswdEntry[]): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  await writeFile(tmp, formatHtpasswd(entries), { mode: 0o600, flag: "wx", flush: true });
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export function validUserName(name: string): boolean {
  const bytes = Buffer.byteLength(name, "utf8");
  return bytes >= 1 && bytes <= 255 && !/[:\s]/.test(name);
}

export async function hashPassword(password: string, cost = 10): Promise<string> {
  return bcrypt.hash(password, cost);
}
