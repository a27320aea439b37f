import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { test } from "node:test";
import { relay } from "../../src/server/relay.js";

/** Two connected loopback sockets. */
async function socketPair(): Promise<[net.Socket, net.Socket, () => void]> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const accepted = once(server, "connection") as Promise<[net.Socket]>;
  const a = net.connect({
    port: (server.address() as net.AddressInfo).port,
    host: "127.0.0.1",
    allowHalfOpen: true,
  });
  const [b] = await accepted;
  await once(a, "connect");
  for (const s of [a, b]) s.on("error", () => {});
  return [a, b, () => server.close()];
}

test("a relay started after one side already closed ends at once and closes the other side", async () => {
  const [clientFar, client, stop1] = await socketPair();
  const [target, targetFar, stop2] = await socketPair();
  try {
    client.destroy();
    await once(client, "close");
    const farClosed = new Promise((resolve) => targetFar.on("close", resolve));
    targetFar.resume();
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      relay(client, target),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("the relay never ended")), 10_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.notEqual(result.reason, "completed");
    assert.ok(target.destroyed);
    await farClosed;
  } finally {
    for (const s of [clientFar, client, target, targetFar]) s.destroy();
    stop1();
    stop2();
  }
});
