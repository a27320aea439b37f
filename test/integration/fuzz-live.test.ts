import assert from "node:assert/strict";
import { test } from "node:test";
import { runLiveFuzz, startFuzzSetup } from "../helpers/live-fuzzer.js";

/**
 * The live fuzzer (test/helpers/live-fuzzer.ts) against a real `bin/ferry serve` for about 30 s:
 * no crash, no hang, every honest probe served, no egress outside loopback, fds back to the
 * baseline. FUZZ_SEED replays a run; longer runs: `npm run fuzz -- --duration 10m`.
 */
test("ferry serve survives mutated handshakes, logins, GSSAPI messages and datagrams", {
  timeout: 180_000,
}, async (t) => {
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
  const durationMs = Number(process.env.FUZZ_MS ?? 30_000);
  t.diagnostic(`seed ${seed} (replay with FUZZ_SEED=${seed})`);
  const setup = await startFuzzSetup({ lifetimeSec: 170 });
  try {
    if (setup.gssapiSkipped) {
      // CI installs the KDC and builds the add-on; elsewhere GSSAPI framing is left out.
      if (process.env.CI === "true") assert.fail(`GSSAPI cannot be fuzzed: ${setup.gssapiSkipped}`);
      t.diagnostic(`GSSAPI not offered: ${setup.gssapiSkipped}`);
    }
    const report = await runLiveFuzz(setup.server, setup.targets, {
      seed,
      durationMs,
      handshakeMs: setup.handshakeMs,
      user: setup.user,
      gssToken: setup.gssToken,
      log: (line) => t.diagnostic(line),
    });
    t.diagnostic(JSON.stringify({ ...report, failures: report.failures.length }));
    assert.deepEqual(report.failures, [], `seed ${seed}`);
    assert.ok(report.inputs > 200, `only ${report.inputs} inputs in ${durationMs} ms`);
    assert.ok(report.probes > 0 && report.udpProbes > 0, "probes ran");
  } finally {
    await setup.stop();
  }
});
