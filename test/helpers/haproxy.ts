import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Daemon, freePort, removingOnStop, startDaemon, tempDir, waitForPort } from "./process.js";

export const HAPROXY = "haproxy";

export interface HaproxyFrontend {
  /** The backend servers, balanced round robin. */
  backends: { host: string; port: number }[];
  /** HAProxy's send-proxy (v1 text) or send-proxy-v2 (binary). */
  sendProxy: "v1" | "v2";
}

export interface RunningHaproxy extends Daemon {
  /** The port of each frontend, in the order given. */
  ports: number[];
  config: string;
}

/**
 * Starts HAProxy in TCP mode in the foreground (-db) with a generated configuration in a temp
 * dir: one frontend on a free 127.0.0.1 port per entry, each with its own round-robin backend.
 */
export async function startHaproxy(
  frontends: HaproxyFrontend[],
  options: { lifetimeSec?: number } = {},
): Promise<RunningHaproxy> {
  const dir = await tempDir("ferry-haproxy-");
  const configPath = join(dir.path, "haproxy.cfg");
  // The first frontend's port comes from startDaemon (retried if taken); the others are picked here.
  const extra = await Promise.all(frontends.slice(1).map(() => freePort()));
  let ports: number[] = [];
  let config = "";
  try {
    const daemon = await startDaemon({
      name: "haproxy",
      command: HAPROXY,
      lifetimeSec: options.lifetimeSec,
      args: (port) => {
        ports = [port, ...extra];
        config = haproxyConfig(frontends, ports);
        writeFileSync(configPath, config);
        return ["-f", configPath, "-db"];
      },
      ready: async (d) => {
        let alive = true;
        void d.exited.then(() => {
          alive = false;
        });
        for (const port of ports) await waitForPort(port, { timeoutMs: 15_000, alive: () => alive });
      },
    });
    return {
      ...removingOnStop(daemon, dir),
      ports,
      config,
    };
  } catch (err) {
    await dir.remove();
    throw err;
  }
}

/** The configuration docs/scale-out.md shows, with test ports and timeouts. */
export function haproxyConfig(frontends: HaproxyFrontend[], ports: number[]): string {
  const lines = [
    "global",
    "  maxconn 200",
    "",
    "defaults",
    "  mode tcp",
    "  timeout connect 5s",
    "  timeout client 60s",
    "  timeout server 60s",
  ];
  frontends.forEach((f, i) => {
    const send = f.sendProxy === "v2" ? "send-proxy-v2" : "send-proxy";
    lines.push(
      "",
      `frontend socks${i}`,
      `  bind 127.0.0.1:${ports[i]}`,
      `  default_backend ferry${i}`,
      "",
      `backend ferry${i}`,
      "  balance roundrobin",
      ...f.backends.map((b, j) => `  server ferry${i}-${j} ${b.host}:${b.port} ${send}`),
    );
  });
  return `${lines.join("\n")}\n`;
}
