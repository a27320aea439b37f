import { type AdminServer, plain } from "./server.js";

/**
 * /healthz: the process is alive and answering (200 always). /readyz: 200 while the SOCKS
 * listeners are open and not draining, else 503 with why. Both are open without the token, for
 * orchestrators' probes, and say nothing more than that.
 */
export function healthRoutes(admin: AdminServer, notReady: () => string | undefined): void {
  admin.route("GET", "/healthz", (_req, res) => plain(res, 200, "ok\n"), { public: true });
  admin.route(
    "GET",
    "/readyz",
    (_req, res) => {
      const why = notReady();
      if (why === undefined) plain(res, 200, "ready\n");
      else plain(res, 503, `not ready: ${why}\n`);
    },
    { public: true },
  );
}
