import path from "node:path";
import { z } from "zod";
import { via } from "./fields.js";
import { parseQuota, type QuotaSize } from "./units.js";

const quotaValue = z.string().transform(via(parseQuota));

/** `limits.quota` (docs/quotas.md): bytes per user per UTC day or month, kept in a state file. */
export const quotaSchema = z.strictObject({
  /** Every authenticated user's quota, both directions together: "10GiB/day", "500GiB/month". */
  perUser: quotaValue.optional(),
  /** Per-user quotas instead of perUser's; "none": this user has none. */
  users: z.record(z.string().min(1), z.union([z.literal("none"), quotaValue])).default({}),
  /**
   * Where the counts are kept across restarts (relative to the configuration file). Default:
   * ferry-quota.json in $STATE_DIRECTORY (systemd's StateDirectory=), else next to the
   * configuration file, else in the working directory. Read at start; fixed until a restart.
   */
  stateFile: z.string().min(1).optional(),
});

export type QuotaConfig = z.output<typeof quotaSchema>;

/** The state file's name when none is configured. */
export const QUOTA_STATE_NAME = "ferry-quota.json";

/**
 * The state file `quota` uses, made absolute: a configured one relative to the configuration
 * file (or the working directory without one), else the default place.
 */
export function quotaStateFile(quota: QuotaConfig, configFile: string | undefined): string {
  const base = configFile ? path.dirname(path.resolve(configFile)) : process.cwd();
  if (quota.stateFile) return path.resolve(base, quota.stateFile);
  const stateDir = process.env.STATE_DIRECTORY?.split(":")[0];
  return path.resolve(stateDir || base, QUOTA_STATE_NAME);
}

/** The quota of `user` under `quota`: its own, else perUser's; undefined: none. */
export function quotaOf(quota: QuotaConfig | undefined, user: string): QuotaSize | undefined {
  if (!quota) return undefined;
  const own = Object.hasOwn(quota.users, user) ? quota.users[user] : undefined;
  if (own === "none") return undefined;
  return own ?? quota.perUser;
}
