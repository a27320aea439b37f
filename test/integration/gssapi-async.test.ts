import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { test } from "node:test";
import { connect as socksConnect } from "../../src/client/connect.js";
import { parseProxyUrl } from "../../src/client/proxy.js";
import { startFerry } from "../helpers/ferry.js";
import { requireKerberos, startTestRealm } from "../helpers/kdc.js";
import { sha256, startEchoServer, within } from "../helpers/net.js";
import { startSlowKdc } from "../helpers/slow-kdc.js";

/** How long the slow KDC holds each reply. */
const KDC_DELAY_MS = 800;

/**
 * Kerberos calls run in the thread pool: while the client's first context waits for the KDC to
 * issue the proxy's service ticket, timers keep firing. With the add-on's old synchronous step the
 * event loop stood still for the whole KDC round trip.
 */
test("GSSAPI: a first authentication against a slow KDC does not block the event loop", async (t) => {
  if (!requireKerberos(t)) return;
  const realm = await startTestRealm();
  const echo = await startEchoServer();
  const ferry = await startFerry({
    auth: ["gssapi"],
    gssapi: { keytab: realm.keytab, principal: "rcmd/localhost", protection: ["confidentiality"] },
  });
  const slow = await startSlowKdc(realm, KDC_DELAY_MS);
  const savedConfig = process.env.KRB5_CONFIG;
  t.after(async () => {
    process.env.KRB5_CONFIG = savedConfig;
    await slow.close();
    await ferry.close();
    await echo.close();
    await realm.stop();
  });
  // A credential cache with the user's TGT only, so the first context must ask the KDC for the
  // ticket to rcmd/localhost (the realm's own cache may hold one already).
  const ccache = `FILE:${join(realm.dir, "ccache-slow-kdc")}`;
  execFileSync("kinit", [realm.user], {
    env: { ...realm.env, KRB5CCNAME: ccache },
    input: `${realm.password}\n`,
    timeout: 20_000,
  });
  // libkrb5 reads KRB5_CONFIG for each new context: from here on the client's KDC is the slow one.
  process.env.KRB5_CONFIG = slow.config;

  const hop = {
    ...parseProxyUrl(`socks5h://127.0.0.1:${ferry.port}`),
    gssapi: { service: "rcmd/localhost", ccache },
  };
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const start = performance.now();
  const socket = await within(socksConnect(hop, `127.0.0.1:${echo.port}`), 30_000, "the GSSAPI connect");
  const elapsed = performance.now() - start;
  loop.disable();

  assert.ok(slow.replies() >= 1, "the service ticket came through the slow KDC");
  assert.ok(elapsed >= KDC_DELAY_MS, `the connect took ${elapsed.toFixed(0)} ms, less than the KDC's delay`);
  const stalledMs = loop.max / 1e6;
  t.diagnostic(`connect ${elapsed.toFixed(0)} ms; longest event-loop delay ${stalledMs.toFixed(0)} ms`);
  assert.ok(
    stalledMs < KDC_DELAY_MS / 2,
    `the event loop stalled for ${stalledMs.toFixed(0)} ms while the KDC took ${KDC_DELAY_MS} ms per reply`,
  );

  // And the session works: a few wrapped frames each way.
  const payload = Buffer.alloc(200_000, "slow kdc ");
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  const ended = once(socket, "end");
  socket.end(payload);
  await within(ended, 30_000, "the echo's end");
  assert.equal(sha256(Buffer.concat(chunks)), sha256(payload));
});
