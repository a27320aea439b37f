import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { SocksClient, type SocksProxy } from "socks";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { sha256, startEchoServer } from "../helpers/net.js";
import { echoThrough } from "../helpers/targets.js";

const payload = randomBytes(512 * 1024);

function connect(ferry: FerryProcess, proxy: Partial<SocksProxy>, host: string, port: number) {
  return SocksClient.createConnection({
    proxy: { host: "127.0.0.1", port: ferry.port, type: 5, ...proxy },
    command: "connect",
    destination: { host, port },
    timeout: 15_000,
  });
}

describe("npm `socks` SocksClient through `ferry serve`", { timeout: 120_000 }, () => {
  let ferry: FerryProcess;
  let echo: { port: number; close: () => Promise<void> };
  before(async () => {
    ferry = await spawnFerry();
    echo = await startEchoServer();
  });
  after(async () => {
    await ferry?.stop();
    await echo?.close();
  });

  const cases = [
    { name: "v4 to an address", type: 4 as const, host: "127.0.0.1", protocol: "socks4", reply: 90 },
    { name: "v4 to a name (4a)", type: 4 as const, host: "localhost", protocol: "socks4a", reply: 90 },
    { name: "v5 to an address", type: 5 as const, host: "127.0.0.1", protocol: "socks5", reply: 0 },
    { name: "v5 to a name", type: 5 as const, host: "localhost", protocol: "socks5", reply: 0 },
  ];
  for (const c of cases) {
    test(`${c.name}: echoed intact`, async () => {
      const skip = ferry.sessions().length;
      const { socket } = await connect(ferry, { type: c.type, userId: "npm-socks" }, c.host, echo.port);
      assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
      const s = await ferry.waitForSession(() => true, { skip });
      assert.equal(s.protocol, c.protocol);
      assert.equal(s.target, `${c.host}:${echo.port}`);
      assert.equal(s.reply, c.reply);
      assert.equal(s.bytesUp, payload.length);
    });
  }
});

describe("npm `socks` SocksClient through `ferry serve --user`", { timeout: 120_000 }, () => {
  const erin = { name: "erin", password: "npm-pw-\u00e9" };
  let ferry: FerryProcess;
  let echo: { port: number; close: () => Promise<void> };
  before(async () => {
    ferry = await spawnFerry({ users: [erin] });
    echo = await startEchoServer();
  });
  after(async () => {
    await ferry?.stop();
    await echo?.close();
  });

  test("v5 with username/password (non-ASCII password): echoed intact", async () => {
    const skip = ferry.sessions().length;
    const { socket } = await connect(
      ferry,
      { type: 5, userId: erin.name, password: erin.password },
      "localhost",
      echo.port,
    );
    assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
    const s = await ferry.waitForSession(() => true, { skip });
    assert.equal(s.user, erin.name);
    assert.equal(s.method, "userpass");
    assert.equal(s.bytesDown, payload.length);
  });

  test("v5 with a wrong password is rejected", async () => {
    const skip = ferry.sessions().length;
    await assert.rejects(
      connect(ferry, { type: 5, userId: erin.name, password: "wrong-pw" }, "127.0.0.1", echo.port),
      /Authentication failed/i,
    );
    const s = await ferry.waitForSession(() => true, { skip });
    assert.match(s.reason ?? "", /authentication failed/);
    assert.equal(s.bytesUp, 0);
  });

  test("v4 is rejected (91)", async () => {
    const skip = ferry.sessions().length;
    await assert.rejects(connect(ferry, { type: 4, userId: erin.name }, "127.0.0.1", echo.port), /Rejected/i);
    const s = await ferry.waitForSession(() => true, { skip });
    assert.equal(s.reply, 91);
  });
});
