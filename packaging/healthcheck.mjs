#!/usr/bin/env node
// Container health check: is Ferry answering SOCKS on HOST:PORT? Sends a SOCKS5 greeting offering
// no-auth and username/password and expects a method selection (05 xx); any method, "none
// acceptable" included, shows the listener is serving. Exit 0 healthy, 1 not. Standalone (no
// imports from Ferry) so it works whatever the install's layout.
import net from "node:net";

const [host = "127.0.0.1", port = "1080"] = (process.argv[2] ?? "127.0.0.1:1080").split(/:(?=\d+$)/);
const timeoutMs = 3000;
const fail = (why) => {
  process.stderr.write(`unhealthy: ${why}\n`);
  process.exit(1);
};
const socket = net.connect({ host: host.replace(/^\[|\]$/g, ""), port: Number(port) });
socket.setTimeout(timeoutMs, () => fail(`no SOCKS reply from ${host}:${port} within ${timeoutMs} ms`));
socket.on("error", (err) => fail(err.message));
socket.on("connect", () => socket.write(Buffer.from([0x05, 0x02, 0x00, 0x02])));
let reply = Buffer.alloc(0);
socket.on("data", (chunk) => {
  reply = Buffer.concat([reply, chunk]);
  if (reply.length < 2) return;
  if (reply[0] !== 0x05) fail(`not a SOCKS5 reply: ${reply.subarray(0, 2).toString("hex")}`);
  socket.destroy();
  process.exit(0);
});
socket.on("end", () => fail("closed without a SOCKS reply"));
