import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { Duplex } from "node:stream";
import { test } from "node:test";
import { TokenBucket } from "../../src/server/limits.js";
import { cutRelay, relay } from "../../src/server/relay.js";
import { waitFor, within } from "../helpers/net.js";

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

test("a client closed after its half-close, while the target's data waits on a bucket, ends the relay", async () => {
  const [clientFar, client, stop1] = await socketPair();
  const [target, targetFar, stop2] = await socketPair();
  try {
    // 1 KiB/s with a 1 KiB burst: the first chunk puts the download in debt for seconds.
    const throttle = { up: [new TokenBucket(1024, 1024)], down: [new TokenBucket(1024, 1024)] };
    const result = relay(client, target, { throttle });
    targetFar.write(Buffer.alloc(64 * 1024, 7));
    await new Promise((resolve) => clientFar.once("data", resolve));
    clientFar.end();
    await new Promise((resolve) => targetFar.once("end", resolve));
    // What the server does at the drain deadline (or a reset the client sent would do).
    client.destroy();
    const ended = await within(result, 5000, "the relay's end");
    assert.equal(ended.reason, "client closed before the target finished sending to it");
    assert.ok(target.destroyed, "the paused target side is closed too");
  } finally {
    for (const s of [clientFar, client, target, targetFar]) s.destroy();
    stop1();
    stop2();
  }
});

test("cutRelay ends a relay whose client side has already closed cleanly", async () => {
  const [clientFar, client, stop] = await socketPair();
  // A target that stopped reading: it takes no write, so our FIN to it never goes out.
  const target = new Duplex({ allowHalfOpen: true, read() {}, write() {} });
  try {
    const result = relay(client, target);
    // Everything from the target, then its FIN; the client answers with a byte and its FIN, and
    // its socket closes. Only the stuck target holds the relay open now.
    target.push("bye");
    target.push(null);
    clientFar.resume();
    await new Promise((resolve) => clientFar.once("end", resolve));
    clientFar.end("x");
    await waitFor(() => client.closed, 5000, "the client side to close");
    assert.equal(target.destroyed, false);
    assert.equal(cutRelay(client, "cut for the test"), true);
    assert.equal((await result).reason, "cut for the test");
    assert.ok(target.destroyed);
    assert.equal(cutRelay(client, "again"), false, "a relay is cut once");
  } finally {
    for (const s of [clientFar, client, target]) s.destroy();
    stop();
  }
});

test("a relay cut just after it passed the client's FIN on to the target still ends", async () => {
  const [clientFar, client, stop1] = await socketPair();
  const [target, targetFar, stop2] = await socketPair();
  try {
    const result = relay(client, target);
    // The client half-closes; the relay ends the target (in its own 'end' listener, which runs
    // first), and the relay is cut in the same tick, as a shutdown or a reset may do. A reset
    // while that shutdown is under way fails (EINVAL), and Node then never emits 'close'.
    let cut: boolean | undefined;
    client.once("end", () => {
      cut = cutRelay(client, "cut at shutdown");
    });
    clientFar.end();
    const ended = await within(result, 5000, "the relay's end");
    assert.equal(cut, true);
    assert.equal(ended.reason, "cut at shutdown");
  } finally {
    for (const s of [clientFar, client, target, targetFar]) s.destroy();
    stop1();
    stop2();
  }
});
