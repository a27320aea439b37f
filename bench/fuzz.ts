/**
 * `npm run fuzz -- --duration 10m [--seed N] [--concurrency 32] [--no-gssapi]`: the live fuzzer
 * (test/helpers/live-fuzzer.ts) for longer than the CI run. Exits 1 on any failure; the seed
 * printed first replays the same inputs.
 */
import { parseArgs } from "node:util";
import { parseDuration } from "../src/config/units.js";
import { runLiveFuzz, startFuzzSetup } from "../test/helpers/live-fuzzer.js";

const { values: flags } = parseArgs({
  options: {
    duration: { type: "string", default: "2m" },
    seed: { type: "string" },
    concurrency: { type: "string", default: "32" },
    "no-gssapi": { type: "boolean", default: false },
  },
});
const durationMs = parseDuration(flags.duration!);
const seed = flags.seed !== undefined ? Number(flags.seed) : Math.floor(Math.random() * 2 ** 31);
process.stdout.write(`fuzz: seed ${seed} (replay with --seed ${seed}), ${flags.duration}\n`);
const setup = await startFuzzSetup({
  lifetimeSec: Math.ceil(durationMs / 1000) + 300,
  gssapi: !flags["no-gssapi"],
});
if (setup.gssapiSkipped) process.stdout.write(`fuzz: GSSAPI not offered: ${setup.gssapiSkipped}\n`);
let report: Awaited<ReturnType<typeof runLiveFuzz>>;
try {
  report = await runLiveFuzz(setup.server, setup.targets, {
    seed,
    durationMs,
    concurrency: Number(flags.concurrency),
    handshakeMs: setup.handshakeMs,
    user: setup.user,
    gssToken: setup.gssToken,
    log: (line) => process.stdout.write(`fuzz: ${line}\n`),
  });
} finally {
  await setup.stop();
}
const { failures, ...figures } = report;
process.stdout.write(`${JSON.stringify(figures, null, 1)}\n`);
if (failures.length) {
  process.stdout.write(`FAILED (seed ${seed}):\n${failures.join("\n")}\n`);
  process.exit(1);
}
process.stdout.write(`PASSED (seed ${seed})\n`);
