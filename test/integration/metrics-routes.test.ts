import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { test } from "node:test";
import { FerryMetrics } from "../../src/observe/metrics.js";
import { startFerry } from "../helpers/ferry.js";
import { startEchoServer, waitFor } from "../helpers/net.js";
import { seriesValue } from "../helpers/prometheus.js";
import { socks5Connect } from "../helpers/socks.js";

test("dials through a failover chain: the dead member counted failed, the live one ok, the dial by its route", async () => {
  const echo = await startEchoServer();
  // The live upstream: another Ferry, loopback targets only.
  const upstream = await startFerry({ rules: [{ allow: { to: ["127.0.0.0/8", "::1"] } }] });
  // A port nobody listens on: the first member, refused at once.
  const closed = net.createServer().listen(0, "127.0.0.1");
  await once(closed, "listening");
  const deadPort = (closed.address() as net.AddressInfo).port;
  closed.close();
  const ferry = await startFerry({
    upstreams: {
      dead: { url: `socks5://127.0.0.1:${deadPort}` },
      live: { url: `socks5://127.0.0.1:${upstream.port}` },
    },
    chains: { out: [{ any: ["dead", "live"], mode: "failover", retryAfter: "1m" }] },
    rules: [{ allow: { to: "127.0.0.1", via: "out" } }],
  });
  const metrics = new FerryMetrics(ferry.server, ferry.context.state);
  try {
    const { client, reply } = await socks5Connect(ferry.port, {
      type: "ipv4",
      host: "127.0.0.1",
      port: echo.port,
    });
    assert.equal(reply.reply, 0);
    const probe = randomBytes(64);
    client.write(probe);
    assert.deepEqual(await client.readBytes(64), probe);
    client.destroy();
    await waitFor(() => ferry.records.length >= 1, 10_000, "the session's record");
    assert.equal(ferry.records[0]!.route, "out");
    assert.equal(
      await seriesValue(metrics, "ferry_upstream_dials_total", {
        route: "out",
        upstream: "dead",
        result: "failed",
      }),
      1,
    );
    assert.equal(
      await seriesValue(metrics, "ferry_upstream_dials_total", {
        route: "out",
        upstream: "live",
        result: "ok",
      }),
      1,
    );
    assert.equal(
      await seriesValue(metrics, "ferry_upstream_dials_total", {
        route: "out",
        upstream: "live",
        result: "failed",
      }),
      0,
    );
    assert.equal(await seriesValue(metrics, "ferry_dials_total", { route: "out", result: "ok" }), 1);
    assert.equal(
      await seriesValue(metrics, "ferry_rule_bytes_total", { rule: "rules[0]", direction: "up" }),
      64,
    );
  } finally {
    await ferry.close();
    await upstream.close();
    await echo.close();
  }
});
