import { Registry } from "prom-client";
import type { AdminServer } from "./server.js";

/** GET /metrics: the Prometheus text format, from `text()` (this process's, or every worker's summed). */
export function metricsRoute(admin: AdminServer, text: () => Promise<string>): void {
  admin.route("GET", "/metrics", async (_req, res) => {
    const body = await text();
    res.writeHead(200, { "content-type": Registry.PROMETHEUS_CONTENT_TYPE, "cache-control": "no-store" });
    res.end(body);
  });
}
