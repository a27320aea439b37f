/**
 * The proxies the bench compares, each started in its own process tree on a loopback port that
 * only loopback clients reach, and reported ready once one whole SOCKS5 session goes through it.
 */
import type { ChildProcess } from "node:child_process";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { freePort, readyMessage, spawnNode, spawnWithFiles, stderrTail, stopping } from "./children.js";
import { UsageError } from "./protocol.js";

export type ProxyName = "minimal" | "microsocks" | "dante" | "ferry";

export interface RunningProxy {
  name: ProxyName;
  port: number;
  child: ChildProcess;
  /** The root of the proxy's process tree (Dante forks below it). */
  pid: number;
  stderr: () => string;
}

export interface PeerSettings {
  /** dist/bench, where minimal-relay.js is. */
  here: string;
  /** The repository root, where bin/ferry is. */
  root: string;
  /** A temporary directory for configuration files. */
  tmp: string;
  /** Descriptors each proxy may need. */
  nofile: number;
  /** Sessions Ferry must admit (its default limits would refuse the idle-memory run). */
  sessions: number;
  /** Extra node flags for the Node proxies (BENCH_PROXY_NODE_ARGS, e.g. --cpu-prof). */
  nodeArgs: string[];
  /** `ferry serve --workers N`, when given. */
  ferryWorkers?: number;
  /** Resolves true once one whole SOCKS5 session went through the proxy on `port`. */
  probe: (port: number) => Promise<boolean>;
}

export const DANTED = "/usr/sbin/danted";
export const MICROSOCKS = "/usr/bin/microsocks";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until a session goes through, or fails with what the proxy wrote to stderr. */
async function served(
  proxy: RunningProxy,
  probe: PeerSettings["probe"],
  timeoutMs = 15_000,
): Promise<RunningProxy> {
  const child = proxy.child;
  child.once("exit", (code, signal) => {
    if (!stopping.has(child))
      process.stderr.write(
        `${proxy.name} (PID ${proxy.pid}) exited unexpectedly (${code ?? signal}):\n${proxy.stderr()}\n`,
      );
  });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${proxy.name} exited (${child.exitCode ?? child.signalCode}):\n${proxy.stderr()}`);
    if (await probe(proxy.port).catch(() => false)) return proxy;
    if (Date.now() > deadline)
      throw new Error(`${proxy.name} did not serve within ${timeoutMs} ms:\n${proxy.stderr()}`);
    await sleep(100);
  }
}

let current: PeerSettings | undefined;

export function configurePeers(settings: PeerSettings): void {
  current = settings;
}

/** The minimal Node relay of bench/minimal-relay.ts. */
async function startMinimal(s: PeerSettings): Promise<RunningProxy> {
  const child = spawnNode([...s.nodeArgs, path.join(s.here, "minimal-relay.js")], s.nofile, "pipe-ipc");
  const stderr = stderrTail(child);
  const port = await readyMessage<number>(child, "minimal relay");
  return served({ name: "minimal", port, child, pid: child.pid!, stderr }, s.probe);
}

/** `ferry serve`, the real CLI with its defaults; the config only raises the session limits. */
async function startFerry(s: PeerSettings): Promise<RunningProxy> {
  const port = await freePort();
  const config = path.join(s.tmp, `ferry-${port}.yaml`);
  writeFileSync(
    config,
    `listen: ["127.0.0.1:${port}"]\nlimits:\n  sessions: ${s.sessions}\n  sessionsPerClient: ${s.sessions}\n`,
  );
  const args = [
    ...s.nodeArgs,
    path.join(s.root, "bin", "ferry"),
    "serve",
    "--config",
    config,
    "--log-level",
    "warn",
    ...(s.ferryWorkers !== undefined ? ["--workers", String(s.ferryWorkers)] : []),
  ];
  const child = spawnNode(args, s.nofile, "pipe-ipc");
  return served({ name: "ferry", port, child, pid: child.pid!, stderr: stderrTail(child) }, s.probe);
}

/**
 * microsocks on 127.0.0.1. It has no target rules; only the bench connects through it, and only
 * to loopback. Its per-connection log line goes to /dev/null (1.0.3 has no quiet flag).
 */
async function startMicrosocks(s: PeerSettings): Promise<RunningProxy> {
  const port = await freePort();
  const child = spawnWithFiles(MICROSOCKS, ["-i", "127.0.0.1", "-p", String(port)], s.nofile, [
    "ignore",
    "ignore",
    "ignore",
  ]);
  return served({ name: "microsocks", port, child, pid: child.pid!, stderr: () => "" }, s.probe);
}

/** danted.conf: clients from loopback only, CONNECT to loopback only, no auth, no logging per session. */
export function danteConfig(port: number): string {
  return [
    "logoutput: stderr",
    `internal: 127.0.0.1 port = ${port}`,
    "external: 127.0.0.1",
    "clientmethod: none",
    "socksmethod: none",
    "user.privileged: root",
    "user.unprivileged: nobody",
    "client pass { from: 127.0.0.0/8 to: 0/0 }",
    "socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }",
    "",
  ].join("\n");
}

/** danted in the foreground with `-N 2`: two mother processes, as in the measurement. */
async function startDante(s: PeerSettings): Promise<RunningProxy> {
  const port = await freePort();
  const config = path.join(s.tmp, `danted-${port}.conf`);
  writeFileSync(config, danteConfig(port), { mode: 0o600 });
  const child = spawnWithFiles(DANTED, ["-f", config, "-N", "2"], s.nofile, ["ignore", "ignore", "pipe"]);
  return served({ name: "dante", port, child, pid: child.pid!, stderr: stderrTail(child) }, s.probe);
}

export function startProxy(name: ProxyName): Promise<RunningProxy> {
  const s = current;
  if (!s) throw new Error("configurePeers() first");
  switch (name) {
    case "minimal":
      return startMinimal(s);
    case "ferry":
      return startFerry(s);
    case "microsocks":
      return startMicrosocks(s);
    case "dante":
      return startDante(s);
  }
}

/** Fails early, with the reason, when a proxy the run needs cannot be started. */
export function checkPeers(names: ProxyName[], root: string, ferryWorkers: number | undefined): void {
  for (const [name, file] of [
    ["dante", DANTED],
    ["microsocks", MICROSOCKS],
  ] as const) {
    if (names.includes(name) && spawnSync("test", ["-x", file]).status !== 0)
      throw new UsageError(
        `${file} is not installed (apt-get install ${name === "dante" ? "dante-server" : name}, or run .ci/install-tools); or leave it out with --systems`,
      );
  }
  if (names.includes("ferry") && ferryWorkers !== undefined) {
    const help = spawnSync(process.execPath, [path.join(root, "bin", "ferry"), "serve", "--help"], {
      encoding: "utf8",
      timeout: 30_000,
    });
    if (!/--workers\b/.test(help.stdout ?? ""))
      throw new UsageError(
        "--ferry-workers needs `ferry serve --workers`, which this build of ferry does not have (`ferry serve --help` does not list it)",
      );
  }
}
