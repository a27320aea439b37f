import { existsSync, realpathSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";

export const DANTE_GSSAPI_SCRIPT = "scripts/build-dante-gssapi.sh";

/** What scripts/build-dante-gssapi.sh installs (Debian's Dante, configured with GSSAPI). */
export interface DanteGssapiBuild {
  prefix: string;
  sockd: string;
  socksify: string;
  /** The LD_PRELOAD client library (Debian's patches rename libdsocks to libdsocksd). */
  libdsocks: string;
}

/**
 * The build in ${FERRY_CACHE:-~/.cache/ferry}/dante-gssapi/current, or the prefix named by
 * FERRY_DANTE_GSSAPI; undefined when it is not there (the script marks a finished install).
 */
export function danteGssapiBuild(): DanteGssapiBuild | undefined {
  const cache = process.env.FERRY_CACHE || join(homedir(), ".cache", "ferry");
  const link = process.env.FERRY_DANTE_GSSAPI || join(cache, "dante-gssapi", "current");
  if (!existsSync(join(link, ".complete"))) return undefined;
  const prefix = realpathSync(link);
  return {
    prefix,
    sockd: join(prefix, "sbin", "sockd"),
    socksify: join(prefix, "bin", "socksify"),
    libdsocks: join(prefix, "lib", "libdsocksd.so"),
  };
}

/** Like requireTool: outside CI a missing build skips with the command to run; under CI it fails. */
export function requireDanteGssapi(t: TestContext): DanteGssapiBuild | undefined {
  const build = danteGssapiBuild();
  if (build) return build;
  const message = `Dante with GSSAPI is not built: run ${DANTE_GSSAPI_SCRIPT} (it takes several minutes; .ci/install-tools runs it)`;
  if (process.env.CI === "true") throw new Error(message);
  t.skip(message);
  return undefined;
}
