import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Daemon, removingOnStop, run, startDaemon, tempDir } from "./process.js";

export const SSHD = "/usr/sbin/sshd";

export interface RunningSshd extends Daemon {
  /** Private key whose public half is the only authorized key. */
  clientKey: string;
  stop(graceMs?: number): ReturnType<Daemon["stop"]>;
}

/**
 * Starts OpenSSH's sshd in the foreground (-D) on a free loopback port, with a temporary host
 * key, a temporary client key as the only authorized key (for root, whom the tests run as), and
 * no password logins. stop() ends it and removes the keys.
 */
export async function startSshd(): Promise<RunningSshd> {
  // sshd's privilege separation directory; a fresh machine may not have it until sshd ran once.
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const dir = await tempDir("ferry-sshd-");
  try {
    const hostKey = join(dir.path, "host_ed25519");
    const clientKey = join(dir.path, "client_ed25519");
    for (const key of [hostKey, clientKey]) {
      const r = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
      if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
    }
    const authorized = join(dir.path, "authorized_keys");
    const pub = await run("cat", [`${clientKey}.pub`]);
    writeFileSync(authorized, pub.stdout, { mode: 0o600 });
    const config = join(dir.path, "sshd_config");
    const daemon = await startDaemon({
      name: "sshd",
      command: SSHD,
      args: (port) => {
        writeFileSync(
          config,
          [
            `ListenAddress 127.0.0.1:${port}`,
            `HostKey ${hostKey}`,
            `AuthorizedKeysFile ${authorized}`,
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            `PidFile ${join(dir.path, "sshd.pid")}`,
            "",
          ].join("\n"),
          { mode: 0o600 },
        );
        return ["-D", "-e", "-f", config];
      },
    });
    return {
      ...removingOnStop(daemon, dir),
      clientKey,
    };
  } catch (err) {
    await dir.remove();
    throw err;
  }
}

/** ssh's arguments for root@127.0.0.1 on `sshd` with its client key: no host-key prompt, no known_hosts, no password. */
export function sshLogin(sshd: RunningSshd): string[] {
  return [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-i",
    sshd.clientKey,
    "-p",
    String(sshd.port),
    "root@127.0.0.1",
  ];
}
