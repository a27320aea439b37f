import type { AdminSettings } from "../../config/admin.js";
import { describeListenError } from "../../server/listen-error.js";
import type { Logger } from "../logger.js";
import { healthRoutes } from "./health.js";
import { AdminServer } from "./server.js";

/** Where the admin listener listens, or why it could not. */
export class AdminListenError extends Error {
  override name = "AdminListenError";
}

/**
 * Opens the admin listener with /healthz and /readyz (`notReady` says why the proxy is not
 * ready, or undefined). Other routes are added by the caller, before or after.
 */
export async function startAdmin(
  settings: AdminSettings,
  notReady: () => string | undefined,
  log?: Logger,
): Promise<{ admin: AdminServer; address: { host: string; port: number } }> {
  const admin = new AdminServer({ ...settings, ...(log && { log }) });
  healthRoutes(admin, notReady);
  try {
    const address = await admin.listen();
    return { admin, address };
  } catch (err) {
    const line = describeListenError(err as NodeJS.ErrnoException, settings.host, settings.port);
    // The advice names --listen, which is the SOCKS port's flag.
    throw new AdminListenError(`admin.listen: ${line.replace(/--listen /g, "admin.listen: ")}`);
  }
}
