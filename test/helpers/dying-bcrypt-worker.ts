import { parentPort } from "node:worker_threads";
import bcrypt from "bcryptjs";

// Answers as src/auth/bcrypt-worker.ts does, except that it dies (exit code 3) when asked about
// the password "die".
parentPort?.on("message", ({ password, hash }: { password: string; hash: string }) => {
  if (password === "die") process.exit(3);
  parentPort?.postMessage({ ok: bcrypt.compareSync(password, hash), ms: 1 });
});
