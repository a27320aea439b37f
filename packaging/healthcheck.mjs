#!/usr/bin/env node
// Container health check: does Ferry's admin listener at HOST:PORT answer GET /healthz with 200?
// The image's configuration (packaging/docker/ferry.yaml) turns the admin listener on at
// 127.0.0.1:9090, inside the container only. Exit 0 healthy, 1 not. Standalone (no imports from
// Ferry) so it works whatever the install's layout.
const target = process.argv[2] ?? "127.0.0.1:9090";
const timeoutMs = 3000;
try {
  const res = await fetch(`http://${target}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
  if (res.status !== 200) {
    process.stderr.write(`unhealthy: GET http://${target}/healthz answered ${res.status}\n`);
    process.exit(1);
  }
  process.exit(0);
} catch (err) {
  const why =
    err instanceof Error && err.name === "TimeoutError"
      ? `no answer within ${timeoutMs} ms`
      : String(err?.cause?.message ?? err);
  process.stderr.write(`unhealthy: GET http://${target}/healthz: ${why}\n`);
  process.exit(1);
}
