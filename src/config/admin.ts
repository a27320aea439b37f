import { z } from "zod";
import { isLoopback } from "../policy/addresses.js";
import { via } from "./fields.js";
import { readSecret, type Secret } from "./secret.js";
import { parseHostPort } from "./units.js";

/**
 * `admin: { listen: "127.0.0.1:9090", token: "${VAR}" | tokenFile: PATH }`: the HTTP listener for
 * /metrics, /healthz, /readyz and the admin page (docs/admin.md). Off when absent. Kept apart from
 * schema.ts so that file only grows by a line.
 */
export const adminSchema = z.strictObject({
  /** host:port, loopback unless a token is set. */
  listen: z.string().transform(via(parseHostPort)).prefault("127.0.0.1:9090"),
  /** The bearer token, as `${VAR}` (read from the environment); a literal is refused. */
  token: z.string().optional(),
  /** A file holding the token (trailing newline ignored); relative to the configuration file. */
  tokenFile: z.string().optional(),
});
export type AdminConfig = z.output<typeof adminSchema>;

/** The admin listener's settings once checked, its token read. */
export interface AdminSettings {
  host: string;
  port: number;
  token?: Secret;
}

/**
 * Reads the token and refuses a listener others can reach without one, as an open proxy is
 * refused. Throws an Error whose message says what to do.
 */
export async function resolveAdmin(
  admin: AdminConfig,
  options: { baseDir?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<AdminSettings> {
  const token = await readSecret(
    { value: admin.token, file: admin.tokenFile },
    { value: "admin.token", file: "admin.tokenFile" },
    options,
  );
  const { host, port } = admin.listen;
  if (!token && !isLoopback(host)) {
    const where = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    throw new Error(
      `admin.listen: refusing to serve the admin listener on ${where} without a token: anyone who reaches it could read the metrics and end sessions. ` +
        `Set admin.tokenFile: PATH (or admin.token: "\${VAR}"), or listen on 127.0.0.1`,
    );
  }
  return { host, port, ...(token && { token }) };
}
