import { performance } from "node:perf_hooks";
import { parentPort } from "node:worker_threads";
import bcrypt from "bcryptjs";

/** One password check asked of this worker; see bcrypt-pool.ts. */
export interface CheckRequest {
  password: string;
  hash: string;
}

/** Whether it matched, how long bcrypt took here (no queueing), or why it could not be checked. */
export type CheckResponse = { ok: boolean; ms: number } | { error: string };

// Runs on a worker thread, one check at a time: bcrypt is pure CPU, so blocking here is the point.
parentPort?.on("message", ({ password, hash }: CheckRequest) => {
  const started = performance.now();
  let response: CheckResponse;
  try {
    const ok = bcrypt.compareSync(password, hash);
    response = { ok, ms: performance.now() - started };
  } catch (err) {
    response = { error: (err as Error).message };
  }
  parentPort?.postMessage(response);
});
