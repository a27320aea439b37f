import assert from "node:assert/strict";
import { test } from "node:test";
import { loadGssapi } from "../../src/auth/gssapi-native.js";
import { startFerry } from "../helpers/ferry.js";
import { requireKerberos, startTestRealm } from "../helpers/kdc.js";
import { rawExchange } from "../helpers/net.js";

/**
 * Found by the live fuzzer: a real AP-REQ cut short, extended or with a bit flipped in its
 * encrypted part was refused with the log reason "gss_accept_sec_context: Success" (the add-on
 * printed the text of a minor code that carries no detail). It must still be refused, with a
 * reason that does not say it succeeded.
 */
test("a damaged Kerberos token is refused with a reason that does not read Success", async (t) => {
  if (!requireKerberos(t)) return;
  const realm = await startTestRealm();
  t.after(() => realm.stop());
  const gss = loadGssapi();
  const credential = new gss.Credential(realm.keytab, "rcmd/localhost");
  const token = async (): Promise<Buffer> => {
    const c = new gss.Context("rcmd@localhost", realm.ccache);
    try {
      return await c.step();
    } finally {
      c.dispose();
    }
  };
  const damaged: [string, Buffer][] = [
    ["cut short", (await token()).subarray(0, 100)],
    ["extended", Buffer.concat([await token(), Buffer.from([1, 2, 3])])],
  ];
  for (const [how, bytes] of damaged) {
    const acceptor = new gss.Context(credential);
    try {
      await assert.rejects(acceptor.step(bytes), (err: Error) => {
        assert.match(err.message, /^gss_accept_sec_context: /, how);
        assert.doesNotMatch(err.message, /Success/, `${how}: ${err.message}`);
        return true;
      });
      assert.equal(acceptor.complete, false);
    } finally {
      acceptor.dispose();
    }
  }
  // The same kind of token undamaged is accepted: the refusals above are the damage's doing.
  const acceptor = new gss.Context(credential);
  try {
    await acceptor.step(await token());
    assert.equal(acceptor.complete, true);
  } finally {
    acceptor.dispose();
  }
});

/**
 * Found by the live fuzzer: an authentication message with an empty token (01 01 00 00) was
 * refused with "No credentials were supplied, or the credentials were unavailable or
 * inaccessible", Kerberos's answer, which points at the server's keytab. The client is at fault.
 */
test("an empty GSSAPI token is refused as the client's fault", async (t) => {
  if (!requireKerberos(t)) return;
  const realm = await startTestRealm();
  const ferry = await startFerry({
    auth: ["gssapi"],
    gssapi: { keytab: realm.keytab, principal: "rcmd/localhost" },
  });
  t.after(async () => {
    await ferry.close();
    await realm.stop();
  });
  const ended = ferry.nextRecord();
  const { data, closed } = await rawExchange(ferry.port, Buffer.from([5, 1, 1, 1, 1, 0, 0]));
  assert.ok(closed, "the server closes");
  // Method GSSAPI chosen, then RFC 1961's abort message.
  assert.deepEqual(data, Buffer.from([5, 1, 1, 0xff]));
  const record = await ended;
  assert.match(record.reason ?? "", /empty authentication token/);
  assert.doesNotMatch(record.reason ?? "", /credentials/);
});
