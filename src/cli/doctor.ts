import { GssapiUnavailableError, loadGssapi } from "../auth/gssapi-native.js";
import { ConfigError, loadConfig } from "../config/load.js";
import { fdsNeeded, readFdLimit } from "../server/fd-budget.js";

/** The GSSAPI line `ferry serve` logs at start and `ferry doctor` prints. */
export function gssapiStatus(): { available: boolean; line: string } {
  try {
    loadGssapi();
    return { available: true, line: "GSSAPI: available (native add-on loaded)" };
  } catch (err) {
    const why = err instanceof GssapiUnavailableError ? err.message : String(err);
    return { available: false, line: `GSSAPI: not available: ${why}` };
  }
}

/** Prints what this installation can do: version, Node, GSSAPI, open files for the limits. */
export async function doctor(version: string, opts: { config?: string }): Promise<number> {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`ferry ${version} on Node.js ${process.versions.node} (${process.platform}-${process.arch})`);
  out(gssapiStatus().line);
  try {
    const config = await loadConfig({ file: opts.config });
    const needed = fdsNeeded(config);
    const limit = readFdLimit();
    const verdict = limit === undefined ? "unknown limit" : limit >= needed ? "ok" : `raise it to ${needed}`;
    out(
      `open files: limit ${limit ?? "?"}, the ${opts.config ? "configured" : "default"} limits need ${needed}: ${verdict}`,
    );
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    out(`configuration: ${err.message}`);
    return 1;
  }
  return 0;
}
