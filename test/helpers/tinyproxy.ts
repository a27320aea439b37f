import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Daemon, removingOnStop, startDaemon, tempDir } from "./process.js";

export const TINYPROXY = "/usr/bin/tinyproxy";

export interface RunningTinyproxy extends Daemon {
  /** http://host:port (without credentials). */
  url: string;
}

/**
 * Starts tinyproxy (an HTTP proxy that supports CONNECT) in the foreground on a free loopback
 * port, clients from loopback only, with Basic auth when `auth` is given.
 */
export async function startTinyproxy(
  options: { auth?: { user: string; password: string }; lifetimeSec?: number } = {},
): Promise<RunningTinyproxy> {
  const dir = await tempDir("ferry-tinyproxy-");
  const configPath = join(dir.path, "tinyproxy.conf");
  try {
    const daemon = await startDaemon({
      name: "tinyproxy",
      command: TINYPROXY,
      lifetimeSec: options.lifetimeSec,
      args: (port) => {
        writeFileSync(
          configPath,
          [
            `Port ${port}`,
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 20",
            "LogLevel Info",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
            // No ConnectPort line: CONNECT to any port (the targets are on ephemeral ports).
            ...(options.auth ? [`BasicAuth ${options.auth.user} ${options.auth.password}`] : []),
            "",
          ].join("\n"),
          { mode: 0o600 },
        );
        return ["-d", "-c", configPath];
      },
    });
    return {
      ...removingOnStop(daemon, dir),
      url: `http://127.0.0.1:${daemon.port}`,
    };
  } catch (err) {
    await dir.remove();
    throw err;
  }
}
