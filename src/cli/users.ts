import { hashPassword, readHtpasswd, validUserName, writeHtpasswdAtomically } from "../auth/htpasswd.js";

/** Reads a password: from stdin when it is piped, else prompted twice without echo. */
export async function readPassword(prompt: string, fromStdin = false): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString("utf8").split(/\r?\n/)[0] ?? "";
  }
  const first = await promptHidden(`${prompt}: `);
  const second = await promptHidden("again: ");
  if (first !== second) throw new Error("the two passwords differ; nothing was written");
  return first;
}

function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    let value = "";
    const onData = (buf: Buffer): void => {
      for (const ch of buf.toString("utf8")) {
        if (ch === "\r" || ch === "\n") {
          done();
          process.stderr.write("\n");
          return resolve(value);
        }
        if (ch === "\u0003") {
          done();
          return reject(new Error("cancelled"));
        }
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else value += ch;
      }
    };
    const done = (): void => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
    };
    stdin.on("data", onData);
  });
}

export interface UsersAddOptions {
  cost?: number;
  /** Read the password from the first line of stdin even when stdin is a terminal. */
  passwordStdin?: boolean;
  /** The password itself, from argv: visible in `ps` and shell history, so only when insisted on. */
  insecurePassword?: string;
}

export async function usersAdd(file: string, name: string, options: UsersAddOptions): Promise<number> {
  if (!validUserName(name))
    throw new Error(`"${name}" cannot be a user name: 1 to 255 bytes, no colon or spaces`);
  if (options.insecurePassword !== undefined && options.passwordStdin) {
    throw new Error(
      "give the password either on stdin (--password-stdin) or with --insecure-password, not both",
    );
  }
  let password: string;
  if (options.insecurePassword !== undefined) {
    process.stderr.write(
      "warning: a password on the command line can be seen by other local users (ps) and stays in shell history\n",
    );
    password = options.insecurePassword;
  } else {
    password = await readPassword(`password for ${name}`, options.passwordStdin);
  }
  const bytes = Buffer.byteLength(password, "utf8");
  if (bytes < 1 || bytes > 255)
    throw new Error("the password must be 1 to 255 bytes (SOCKS5 cannot carry more)");
  const entries = await readHtpasswd(file);
  const hash = await hashPassword(password, options.cost ?? 10);
  const existing = entries.find((e) => e.name === name);
  if (existing) existing.hash = hash;
  else entries.push({ name, hash });
  await writeHtpasswdAtomically(file, entries);
  process.stderr.write(`${existing ? "updated" : "added"} ${name} in ${file}\n`);
  return 0;
}

export async function usersRemove(file: string, name: string): Promise<number> {
  const entries = await readHtpasswd(file);
  const kept = entries.filter((e) => e.name !== name);
  if (kept.length === entries.length) {
    process.stderr.write(`ferry: no user "${name}" in ${file}\n`);
    return 1;
  }
  await writeHtpasswdAtomically(file, kept);
  process.stderr.write(`removed ${name} from ${file}\n`);
  return 0;
}

export async function usersList(file: string): Promise<number> {
  for (const e of await readHtpasswd(file)) process.stdout.write(`${e.name}\n`);
  return 0;
}
