import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { UserRow } from "../../src/observe/live/view.js";
import { type FerryWithPage, startFerryWithPage } from "../helpers/admin-page.js";
import { startEchoServer } from "../helpers/net.js";
import { socks5Connect } from "../helpers/socks.js";

/** The live page's users table carries each user's transfer quota as it stands. */

const ALICE = { name: "alice", password: "wonderland" };
let page: FerryWithPage;
let echo: Awaited<ReturnType<typeof startEchoServer>>;

before(async () => {
  echo = await startEchoServer();
  page = await startFerryWithPage(
    {
      rules: [{ allow: { to: ["127.0.0.0/8"] } }],
      limits: {
        quota: { perUser: "1MiB/day", users: { carol: "2MiB/month" }, stateFile: "/nonexistent/quota.json" },
      },
    },
    { inlineUsers: [ALICE] },
  );
  // startFerry builds the context only; `ferry serve` and startServer put the quotas in force.
  page.ferry.context.state.quotas.adopt(page.ferry.context.config);
});

after(async () => {
  await page.close();
  await echo.close();
});

async function users(): Promise<{ users: UserRow[]; columns: { key: string; label: string }[] }> {
  const res = await page.api("/api/users");
  assert.equal(res.status, 200);
  return (await res.json()) as { users: UserRow[]; columns: { key: string; label: string }[] };
}

test("the users table has a quota column: what each user moved of their quota this period", async () => {
  const initial = await users();
  assert.deepEqual(initial.columns, [{ key: "quota", label: "quota used" }]);
  // A user given a quota of their own is listed before any session.
  assert.equal(initial.users.find((u) => u.user === "carol")?.quota, "0B of 2MiB this month");
  const { client, reply } = await socks5Connect(
    page.ferry.port,
    { type: "ipv4", host: "127.0.0.1", port: echo.port },
    {
      user: ALICE.name,
      password: ALICE.password,
    },
  );
  assert.equal(reply.reply, 0);
  client.write(Buffer.alloc(5120, 1));
  await client.readBytes(5120);
  client.destroy();
  await page.ferry.nextRecord();
  let alice: UserRow | undefined;
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    alice = (await users()).users.find((u) => u.user === "alice");
    if (alice?.quota === "10KiB of 1MiB this day") break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(alice?.quota, "10KiB of 1MiB this day", "both directions count");
});
