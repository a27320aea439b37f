import { pino } from "pino";
import type { ConfigSources } from "../../src/config/load.js";
import type { FileConfig } from "../../src/config/schema.js";
import { Secret } from "../../src/config/secret.js";
import { healthRoutes } from "../../src/observe/admin/health.js";
import { liveRoutes } from "../../src/observe/admin/live-routes.js";
import { AdminServer } from "../../src/observe/admin/server.js";
import { LocalLive } from "../../src/observe/live/local.js";
import { type RunningFerry, startFerry } from "./ferry.js";

/** A Ferry server in this process with the admin listener and its live page, as `ferry serve` wires them. */
export interface FerryWithPage {
  ferry: RunningFerry;
  live: LocalLive;
  admin: AdminServer;
  /** http://127.0.0.1:PORT */
  base: string;
  token: string;
  /** Every line the admin routes logged. */
  logs: { msg: string; [key: string]: unknown }[];
  /** fetch on the admin listener with the bearer token (unless `headers.authorization` is given). */
  api(path: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
}

export async function startFerryWithPage(
  config: Partial<FileConfig> = {},
  extra: Omit<ConfigSources, "overrides"> = {},
  options: { intervalMs?: number } = {},
): Promise<FerryWithPage> {
  const token = "page-test-token";
  const ferry = await startFerry(config, extra);
  const live = new LocalLive(ferry.server, ferry.context.state);
  const logs: FerryWithPage["logs"] = [];
  const log = pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const admin = new AdminServer({ host: "127.0.0.1", port: 0, token: new Secret(token), log });
  healthRoutes(admin, () => undefined);
  const routes = liveRoutes(admin, live, log, { intervalMs: options.intervalMs ?? 250 });
  const { port } = await admin.listen();
  const base = `http://127.0.0.1:${port}`;
  return {
    ferry,
    live,
    admin,
    base,
    token,
    logs,
    api: (path, init = {}) => {
      const headers = new Headers(init.headers);
      if (!headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
      return fetch(`${base}${path}`, { ...init, headers });
    },
    close: async () => {
      routes.close();
      await admin.close();
      await ferry.close();
    },
  };
}
