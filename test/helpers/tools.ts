import { spawnSync } from "node:child_process";
import type { TestContext } from "node:test";

/** Debian's Python, which is where python3-socks (PySocks) is installed. */
export const SYSTEM_PYTHON = "/usr/bin/python3";

export function hasTool(command: string): boolean {
  if (command.startsWith("/")) return spawnSync("test", ["-x", command]).status === 0;
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

/**
 * Interop tests need third-party programs. Outside CI a missing one skips the test with a hint;
 * under CI=true it fails, because .ci/run must have installed it.
 */
export function requireTool(t: TestContext, command: string, debianPackage: string): boolean {
  if (hasTool(command)) return true;
  const message = `${command} is not installed (apt-get install ${debianPackage}, or run .ci/install-tools)`;
  if (process.env.CI === "true") throw new Error(message);
  t.skip(message);
  return false;
}

/**
 * Some set-ups need root (Dante's username auth uses system accounts). Outside CI a non-root run
 * skips with a hint; under CI=true it fails, since the suite is meant to run as root there.
 */
export function requireRoot(t: TestContext, why: string): boolean {
  if (process.getuid?.() === 0) return true;
  const message = `${why} needs root (run the tests as root, as .ci/run does)`;
  if (process.env.CI === "true") throw new Error(message);
  t.skip(message);
  return false;
}

/** Like requireTool, for a module of Debian's Python (SYSTEM_PYTHON). */
export function requirePythonModule(t: TestContext, module: string, debianPackage: string): boolean {
  const ok =
    spawnSync(SYSTEM_PYTHON, ["-c", `import ${module}`], { stdio: "ignore", timeout: 10_000 }).status === 0;
  if (ok) return true;
  const message = `${SYSTEM_PYTHON} cannot import ${module} (apt-get install ${debianPackage}, or run .ci/install-tools)`;
  if (process.env.CI === "true") throw new Error(message);
  t.skip(message);
  return false;
}
