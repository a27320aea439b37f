import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { FileConfig } from "../../src/config/schema.js";
import type { SessionRecord } from "../../src/server/context.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startEchoServer } from "../helpers/net.js";
import { type RunningSlapd, SERVICE, SUFFIX, startSlapd } from "../helpers/slapd.js";
import { socks5Connect, userPassLogin } from "../helpers/socks.js";

/**
 * `users: { ldap }` against a slapd the test starts on loopback, seeded with users and groups:
 * logins are checked by a bind as the user, groups come from memberOf (or a group search), a
 * filter cannot be widened by the login name, and a directory that is down lets nobody in.
 */

const ALICE = { uid: "alice", password: "alice-ldap-pw", groups: ["staff"] };
const BOB = { uid: "bob", password: "bob-ldap-pw", groups: ["lab"] };
const CAROL = { uid: "carol", password: "carol-ldap-pw" };

function ldapConfig(slapd: RunningSlapd, extra: Record<string, unknown> = {}): Partial<FileConfig> {
  return {
    users: {
      ldap: {
        url: slapd.url,
        bindDn: SERVICE.dn,
        bindPasswordFile: slapd.bindPasswordFile,
        base: `ou=people,${SUFFIX}`,
        cacheTtl: "1m",
        ...extra,
      },
    },
    rules: [{ allow: { groups: ["staff"] } }],
  };
}

describe("users from LDAP (slapd)", () => {
  let slapd: RunningSlapd | undefined;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
  });
  after(async () => {
    await slapd?.remove();
    await echo.close();
  });

  /** A CONNECT to the echo server as `uid`: the proxy's reply code and the session's record. */
  async function connectAs(ferry: RunningFerry, uid: string, password: string) {
    const ended = ferry.nextRecord();
    const { client, reply } = await socks5Connect(
      ferry.port,
      { type: "ipv4", host: "127.0.0.1", port: echo.port },
      { user: uid, password },
    );
    client.destroy();
    return { reply: reply.reply, record: await ended };
  }

  /** A login that must be refused, and the reason its session line gives. */
  async function refused(ferry: RunningFerry, uid: string, password: string): Promise<SessionRecord> {
    const ended = ferry.nextRecord();
    const { ok } = await userPassLogin(ferry.port, uid, password);
    assert.equal(ok, false, `the login of "${uid}" is refused`);
    return await ended;
  }

  test("a login by LDAP password; memberOf gives the rule's group: one user allowed, another denied", async (t) => {
    slapd = await startSlapd(t, [ALICE, BOB, CAROL]);
    if (!slapd) return;
    const ferry = await startFerry(ldapConfig(slapd));
    try {
      const alice = await connectAs(ferry, "alice", ALICE.password);
      assert.equal(alice.reply, 0, "alice, in staff, is allowed");
      assert.deepEqual(alice.record.groups, ["staff"]);
      const bob = await connectAs(ferry, "bob", BOB.password);
      assert.equal(bob.record.user, "bob", "bob's password is right");
      assert.deepEqual(bob.record.groups, ["lab"]);
      assert.equal(bob.reply, 2, "bob, not in staff, is denied by the rules");
    } finally {
      await ferry.close();
    }
  });

  test("groups from a group search instead of an attribute", async (t) => {
    if (!slapd) return t.skip("no slapd");
    const config = ldapConfig(slapd, { groupSearch: { base: `ou=groups,${SUFFIX}` } });
    const ferry = await startFerry({ ...config, rules: [{ allow: { groups: ["lab"] } }] });
    try {
      const bob = await connectAs(ferry, "bob", BOB.password);
      assert.deepEqual(bob.record.groups, ["lab"]);
      assert.equal(bob.reply, 0, "bob, in lab, is allowed");
    } finally {
      await ferry.close();
    }
  });

  test("a wrong password, an unknown user and an empty password are refused", async (t) => {
    if (!slapd) return t.skip("no slapd");
    const ferry = await startFerry(ldapConfig(slapd));
    try {
      assert.match((await refused(ferry, "alice", "not-it")).reason ?? "", /wrong password/);
      assert.match((await refused(ferry, "mallory", "anything")).reason ?? "", /unknown user/);
      // An empty password (RFC 1929 cannot carry one; HTTP Basic can) would be an anonymous
      // bind, which LDAP servers accept.
      const directory = ferry.context.users.directory!;
      assert.equal((await directory.verify("alice", "")).ok, false);
    } finally {
      await ferry.close();
    }
  });

  test("a login name cannot widen the filter (RFC 4515 escaping)", async (t) => {
    if (!slapd) return t.skip("no slapd");
    const ferry = await startFerry(ldapConfig(slapd));
    try {
      // Unescaped, (uid=al*) would find alice alone, and her password would let "al*" in.
      for (const name of ["al*", "a*e", "*lice", "alice)(uid=*"]) {
        const record = await refused(ferry, name, ALICE.password);
        assert.match(record.reason ?? "", /unknown user/, `"${name}" matches no entry`);
      }
    } finally {
      await ferry.close();
    }
  });

  test("the directory stopped: logins fail closed; a login remembered within cacheTtl still works", async (t) => {
    if (!slapd) return t.skip("no slapd");
    const ferry = await startFerry(ldapConfig(slapd));
    try {
      assert.equal((await connectAs(ferry, "alice", ALICE.password)).reply, 0);
      await slapd.stop();
      assert.equal((await connectAs(ferry, "alice", ALICE.password)).reply, 0, "alice's login is remembered");
      const carol = await refused(ferry, "carol", CAROL.password);
      assert.match(carol.reason ?? "", /LDAP directory .* is unreachable/);
      // The cache holds a digest of the right password only: a wrong one goes to the directory.
      const wrong = await refused(ferry, "alice", "not-it");
      assert.match(wrong.reason ?? "", /unreachable/);
      await slapd.restart();
      assert.equal((await connectAs(ferry, "alice", ALICE.password)).reply, 0, "back once the directory is");
    } finally {
      await ferry.close();
    }
  });
});
