import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, test } from "node:test";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startEndlessSource } from "../helpers/net.js";

/** A server that sends data as fast as the reader takes it, until the connection goes. */
const startSource = () => startEndlessSource(Buffer.alloc(64 * 1024, 7));

/** SOCKS5 greeting and CONNECT to 127.0.0.1:port; resolves once the reply has arrived. */
async function tunnel(proxyPort: number, port: number): Promise<net.Socket> {
  const s = net.connect({ host: "127.0.0.1", port: proxyPort });
  await once(s, "connect");
  s.write(Buffer.from([5, 1, 0]));
  const request = Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, 0, 0]);
  request.writeUInt16BE(port, 8);
  let got = Buffer.alloc(0);
  let sent = false;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      if (!sent && got.length >= 2) {
        got = got.subarray(2);
        sent = true;
        s.write(request);
      }
      if (sent && got.length >= 10) {
        s.off("data", onData);
        s.pause();
        resolve();
      }
    };
    s.on("data", onData);
    s.once("error", reject);
    s.once("close", () => reject(new Error("the proxy closed during the handshake")));
  });
  assert.equal(got[1], 0, "CONNECT succeeded");
  return s;
}

let ferry: RunningFerry;
let source: Awaited<ReturnType<typeof startSource>>;
const rejections: unknown[] = [];
const onRejection = (err: unknown): void => {
  rejections.push(err);
};

before(async () => {
  process.on("unhandledRejection", onRejection);
  ferry = await startFerry();
  source = await startSource();
});
after(async () => {
  process.off("unhandledRejection", onRejection);
  await ferry?.close();
  await source?.close();
});

test("a client that resets mid-download ends its session without an unhandled error", async () => {
  for (let i = 0; i < 5; i++) {
    const s = await tunnel(ferry.port, source.port);
    // Let the relay fill the buffers, then reset with data still unread.
    s.resume();
    await once(s, "data");
    const record = ferry.nextRecord();
    s.resetAndDestroy();
    const r = await record;
    assert.equal(r.reply, 0);
    assert.ok(r.bytesDown > 0, "some bytes were relayed before the reset");
  }
  // Give a late rejection the chance to surface before we look.
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(
    rejections.map((e) => (e as Error).message),
    [],
  );
  // And the server still serves.
  const s = await tunnel(ferry.port, source.port);
  s.resume();
  await once(s, "data");
  s.destroy();
});
