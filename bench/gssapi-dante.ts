// Dante (built with GSSAPI by scripts/build-dante-gssapi.sh) for bench:gssapi: its sockd as the
// proxy and its client library (socksify) in front of socat as the sender.
import { spawnSync } from "node:child_process";
import { existsSync, realpathSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { ProtectionName } from "../src/protocol/gssapi.js";
import type { TestRealm } from "../test/helpers/kdc.js";
import { type Daemon, describeRun, run, startDaemon } from "../test/helpers/process.js";

/** RFC 1961 level 0 is Dante's "clear". */
const danteLevel: Record<ProtectionName, string> = {
  none: "clear",
  integrity: "integrity",
  confidentiality: "confidentiality",
};

export interface DanteBuild {
  sockd: string;
  socksify: string;
}

/** The build in $FERRY_DANTE_GSSAPI or ${FERRY_CACHE:-~/.cache/ferry}/dante-gssapi/current, with socat; else why not. */
export function findDanteGssapi(): DanteBuild | string {
  const cache = process.env.FERRY_CACHE || join(homedir(), ".cache", "ferry");
  const link = process.env.FERRY_DANTE_GSSAPI || join(cache, "dante-gssapi", "current");
  if (!existsSync(join(link, ".complete")))
    return `no Dante with GSSAPI in ${link} (scripts/build-dante-gssapi.sh)`;
  if (spawnSync("socat", ["-V"]).status !== 0) return "socat is not installed (apt-get install socat)";
  const prefix = realpathSync(link);
  return { sockd: join(prefix, "sbin", "sockd"), socksify: join(prefix, "bin", "socksify") };
}

/** sockd on a free loopback port, GSSAPI with the realm's rcmd/localhost key at `level`, loopback targets only. */
export function startSockd(build: DanteBuild, realm: TestRealm, level: ProtectionName): Promise<Daemon> {
  const config = join(realm.dir, `sockd-${level}.conf`);
  return startDaemon({
    name: "sockd",
    command: build.sockd,
    env: realm.env,
    lifetimeSec: 600,
    args: (port) => {
      writeFileSync(
        config,
        [
          "logoutput: stderr",
          `internal: 127.0.0.1 port = ${port}`,
          "external: lo",
          "clientmethod: none",
          "socksmethod: gssapi",
          "user.privileged: root",
          // libkrb5's replay cache lives in the realm's directory, which is root's.
          "user.unprivileged: root",
          "client pass { from: 127.0.0.0/8 to: 0/0",
          `  gssapi.keytab: FILE:${realm.keytab}`,
          "  gssapi.servicename: rcmd/localhost",
          `  gssapi.enctype: ${danteLevel[level]}`,
          "  log: error",
          "}",
          "socks pass { from: 0/0 to: 127.0.0.0/8 command: connect }",
          "",
        ].join("\n"),
        { mode: 0o600 },
      );
      return ["-f", config, "-N", "1"];
    },
  });
}

/** Sends `bytes` zero bytes to 127.0.0.1:targetPort with socat under Dante's client, via the proxy at `proxyPort`. */
export async function socksifiedSend(
  build: DanteBuild,
  realm: TestRealm,
  proxyPort: number,
  level: ProtectionName,
  targetPort: number,
  bytes: number,
): Promise<void> {
  const conf = join(realm.dir, `socks-${level}-${proxyPort}.conf`);
  writeFileSync(
    conf,
    [
      "route {",
      `  from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = ${proxyPort}`,
      "  proxyprotocol: socks_v5",
      "  method: gssapi",
      "  gssapi.servicename: rcmd",
      `  gssapi.enctype: ${danteLevel[level]}`,
      "}",
      "",
    ].join("\n"),
  );
  const r = await run(
    build.socksify,
    // 64 KiB writes: with socat's default 8 KiB, Dante's client wraps each into a token of its own
    // and tops out near 20 MB/s, whichever proxy is behind it.
    ["socat", "-u", "-b", "65536", `OPEN:/dev/zero,readbytes=${bytes}`, `TCP:127.0.0.1:${targetPort}`],
    {
      // Without SOCKS_AUTOADD_LANROUTES=no Dante's client goes direct to local networks.
      env: { ...realm.env, SOCKS_CONF: conf, SOCKS_AUTOADD_LANROUTES: "no" },
      timeoutMs: 300_000,
    },
  );
  if (r.code !== 0) throw new Error(`socksify socat failed: ${describeRun(r)}`);
}
