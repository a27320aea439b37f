import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Daemon, removingOnStop, startDaemon, tempDir } from "./process.js";

export const STUNNEL = "stunnel4";

/** One stunnel service: `client` wraps plain connections in TLS, else it ends TLS (a server). */
export interface StunnelService {
  client: boolean;
  /** Where it passes connections on, on 127.0.0.1. */
  connectPort: number;
  /** Server mode: the certificate and key it serves. */
  cert?: string;
  key?: string;
  /** Client mode: the CA the far side's certificate must chain to, and the name it must carry. */
  caFile?: string;
  checkHost?: string;
}

/**
 * Runs stunnel in the foreground on a free loopback port with one service, logging to stderr,
 * and waits until it accepts. stop() ends it (and removes its configuration).
 */
export async function startStunnel(service: StunnelService, lifetimeSec = 120): Promise<Daemon> {
  const dir = await tempDir("ferry-stunnel-");
  const configPath = join(dir.path, "stunnel.conf");
  try {
    const daemon = await startDaemon({
      name: "stunnel",
      command: STUNNEL,
      lifetimeSec,
      args: (port) => {
        writeFileSync(
          configPath,
          [
            "foreground = yes",
            "pid =",
            "debug = 5",
            "[service]",
            `client = ${service.client ? "yes" : "no"}`,
            `accept = 127.0.0.1:${port}`,
            `connect = 127.0.0.1:${service.connectPort}`,
            ...(service.cert ? [`cert = ${service.cert}`, `key = ${service.key}`] : []),
            ...(service.caFile ? [`CAfile = ${service.caFile}`, "verifyChain = yes"] : []),
            ...(service.checkHost ? [`checkHost = ${service.checkHost}`] : []),
            "",
          ].join("\n"),
        );
        return [configPath];
      },
    });
    return {
      ...removingOnStop(daemon, dir),
    };
  } catch (err) {
    await dir.remove();
    throw err;
  }
}
