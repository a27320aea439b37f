import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { type Daemon, freePort, startDaemon, tempDir, waitForPort } from "./process.js";
import { requireTool } from "./tools.js";

export const SLAPD = "/usr/sbin/slapd";
export const SUFFIX = "dc=example,dc=org";
export const ROOT_DN = `cn=admin,${SUFFIX}`;
const ROOT_PW = "root-secret";
/** The service account Ferry binds as to look users up. */
export const SERVICE = { dn: `cn=ferry,ou=services,${SUFFIX}`, password: "service-secret" };

export interface DirectoryUser {
  uid: string;
  password: string;
  groups?: string[];
}

export interface RunningSlapd {
  url: string;
  port: number;
  pid: number;
  /** A file holding the service account's password. */
  bindPasswordFile: string;
  stop(): Promise<void>;
  /** Starts it again on the same port with the same data. */
  restart(): Promise<void>;
  remove(): Promise<void>;
}

/**
 * Its own slapd on a free loopback port: a slapd.conf written to a temp directory (mdb backend,
 * the memberof overlay, so users carry memberOf), seeded with `users` under ou=people, their
 * groups (groupOfNames) under ou=groups and the service account, all with ldapadd. Skips outside
 * CI (fails under CI) when slapd or ldapadd is missing; returns undefined then.
 */
export async function startSlapd(t: TestContext, users: DirectoryUser[]): Promise<RunningSlapd | undefined> {
  if (!requireTool(t, SLAPD, "slapd") || !requireTool(t, "ldapadd", "ldap-utils")) return undefined;
  const dir = await tempDir("ferry-slapd-");
  const db = join(dir.path, "db");
  mkdirSync(db);
  const conf = join(dir.path, "slapd.conf");
  writeFileSync(
    conf,
    [
      "include /etc/ldap/schema/core.schema",
      "include /etc/ldap/schema/cosine.schema",
      "include /etc/ldap/schema/inetorgperson.schema",
      "include /etc/ldap/schema/nis.schema",
      "modulepath /usr/lib/ldap",
      "moduleload back_mdb",
      "moduleload memberof",
      `pidfile ${join(dir.path, "slapd.pid")}`,
      "database mdb",
      `suffix "${SUFFIX}"`,
      `rootdn "${ROOT_DN}"`,
      `rootpw ${ROOT_PW}`,
      `directory ${db}`,
      "maxsize 10485760",
      "overlay memberof",
      "access to attrs=userPassword by anonymous auth by self read by * none",
      "access to * by users read by * none",
      "",
    ].join("\n"),
  );
  const bindPasswordFile = join(dir.path, "service.password");
  writeFileSync(bindPasswordFile, `${SERVICE.password}\n`, { mode: 0o600 });
  const port = await freePort();
  const url = `ldap://127.0.0.1:${port}`;
  const run = (): Promise<Daemon> =>
    startDaemon({
      name: "slapd",
      command: SLAPD,
      // -d: stay in the foreground (stopped by PID); the port is fixed, so a restart finds it.
      args: () => ["-f", conf, "-h", `${url}/`, "-d", "0"],
      ready: (d) => waitForPort(port, { timeoutMs: 15_000, alive: () => d.child.exitCode === null }),
      attempts: 1,
    });
  let daemon: Daemon | undefined;
  try {
    daemon = await run();
    const groups = new Map<string, string[]>();
    for (const u of users) for (const g of u.groups ?? []) groups.set(g, [...(groups.get(g) ?? []), u.uid]);
    const entry = (lines: string[]) => `${lines.join("\n")}\n`;
    const ldif = [
      entry([
        `dn: ${SUFFIX}`,
        "objectClass: dcObject",
        "objectClass: organization",
        "o: Example",
        "dc: example",
      ]),
      ...["people", "groups", "services"].map((ou) =>
        entry([`dn: ou=${ou},${SUFFIX}`, "objectClass: organizationalUnit", `ou: ${ou}`]),
      ),
      entry([
        `dn: ${SERVICE.dn}`,
        "objectClass: person",
        "objectClass: simpleSecurityObject",
        "cn: ferry",
        "sn: ferry",
        `userPassword: ${SERVICE.password}`,
      ]),
      ...users.map((u) =>
        entry([
          `dn: uid=${u.uid},ou=people,${SUFFIX}`,
          "objectClass: inetOrgPerson",
          `uid: ${u.uid}`,
          `cn: ${u.uid}`,
          `sn: ${u.uid}`,
          `userPassword: ${u.password}`,
        ]),
      ),
      // After the users: the overlay sets their memberOf as the groups are added.
      ...[...groups].map(([g, members]) =>
        entry([
          `dn: cn=${g},ou=groups,${SUFFIX}`,
          "objectClass: groupOfNames",
          `cn: ${g}`,
          ...members.map((m) => `member: uid=${m},ou=people,${SUFFIX}`),
        ]),
      ),
    ].join("\n");
    const added = spawnSync("ldapadd", ["-x", "-H", url, "-D", ROOT_DN, "-w", ROOT_PW], {
      input: ldif,
      encoding: "utf8",
      timeout: 15_000,
    });
    if (added.status !== 0) throw new Error(`ldapadd failed: ${added.stderr}`);
  } catch (err) {
    await daemon?.stop(2000);
    await dir.remove();
    throw err;
  }
  let running = daemon;
  return {
    url,
    port,
    get pid() {
      return running.pid;
    },
    bindPasswordFile,
    async stop() {
      await running.stop(3000);
    },
    async restart() {
      running = await run();
    },
    async remove() {
      await running.stop(3000);
      await dir.remove();
    },
  };
}
