import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { SessionRecord } from "../../src/server/context.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startEchoServer, waitFor, within } from "../helpers/net.js";
import { socks5Connect } from "../helpers/socks.js";

let ferry: RunningFerry;
let echo: Awaited<ReturnType<typeof startEchoServer>>;

before(async () => {
  echo = await startEchoServer();
  ferry = await startFerry({ rules: [{ allow: { to: ["127.0.0.0/8"] } }] });
});

after(async () => {
  await ferry.close();
  await echo.close();
});

const running = (): SessionRecord[] => [...ferry.server.sessions()];

test("a running session is listed with its target, and its bytes grow while data moves", async () => {
  const established: SessionRecord[] = [];
  ferry.server.on("established", (r) => established.push(r));
  const { client, reply } = await socks5Connect(ferry.port, {
    type: "ipv4",
    host: "127.0.0.1",
    port: echo.port,
  });
  try {
    assert.equal(reply.reply, 0);
    const [live] = running().filter((r) => r.clientPort === client.localPort);
    assert.ok(live, "the session is listed while it runs");
    assert.equal(live.target, `127.0.0.1:${echo.port}`);
    assert.equal(live.command, "connect");
    assert.ok(established.includes(live), "'established' was emitted with the same record");
    client.write(Buffer.alloc(1000, 1));
    await client.readBytes(1000);
    await waitFor(() => live.bytesUp === 1000 && live.bytesDown === 1000, 5000, "1000 bytes each way");
    client.write(Buffer.alloc(500, 2));
    await client.readBytes(500);
    await waitFor(() => live.bytesUp === 1500 && live.bytesDown === 1500, 5000, "1500 bytes each way");
  } finally {
    client.destroy();
  }
  const record = await within(ferry.nextRecord(), 5000, "the session record");
  assert.equal(record.bytesUp, 1500, "the final record counts each byte once");
  assert.equal(record.bytesDown, 1500);
  await waitFor(() => running().length === 0, 5000, "the session to leave the list");
});

test("endSession cuts a running session and names the reason in its record", async () => {
  const { client, reply } = await socks5Connect(ferry.port, {
    type: "ipv4",
    host: "127.0.0.1",
    port: echo.port,
  });
  assert.equal(reply.reply, 0);
  const [live] = running();
  assert.ok(live);
  assert.equal(ferry.server.endSession(live.id + 1000, "nobody"), false, "an unknown id ends nothing");
  // Not events.once: the reset rejects it with ECONNRESET.
  const closed = new Promise((resolve) => client.socket.once("close", resolve));
  const ended = ferry.nextRecord();
  assert.equal(ferry.server.endSession(live.id, "ended by the admin"), true);
  await within(closed, 5000, "the client connection to close");
  const record = await within(ended, 5000, "the session record");
  assert.equal(record.id, live.id);
  assert.equal(record.reason, "ended by the admin");
});
