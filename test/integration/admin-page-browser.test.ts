import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Browser, chromium, type Page } from "playwright-core";
import { healthRoutes } from "../../src/observe/admin/health.js";
import { liveRoutes } from "../../src/observe/admin/live-routes.js";
import { AdminServer } from "../../src/observe/admin/server.js";
import type { LiveSnapshot, LiveSource } from "../../src/observe/live/view.js";
import { type FerryWithPage, startFerryWithPage } from "../helpers/admin-page.js";
import { sleep, startEchoServer, within } from "../helpers/net.js";
import { socks5Connect } from "../helpers/socks.js";
import { hasTool, requireTool } from "../helpers/tools.js";

/**
 * The live admin page in a real browser: Debian's chromium, driven by playwright-core (nothing is
 * downloaded). Under CI=true a missing chromium fails the test; elsewhere it skips with a hint.
 */

const CHROMIUM = "/usr/bin/chromium";
const ALICE = { name: "alice", password: "wonderland" };
/** Waits in the page: generous, the machine is shared. */
const WAIT_MS = 20_000;

let browser: Browser | undefined;
let ferry: FerryWithPage | undefined;
let echo: Awaited<ReturnType<typeof startEchoServer>> | undefined;

before(async () => {
  if (!hasTool(CHROMIUM)) return;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  await ferry?.close();
  await echo?.close();
});

/** A page of its own (its own cookie jar) opened with the token in the address. */
async function openPage(base: string, token: string): Promise<Page> {
  const context = await browser!.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  return page;
}

/** Polls `check` until it holds; the page's CSP forbids the string evaluation waitForFunction uses. */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await sleep(50);
  }
}

const cellValue = (page: Page, id: string, col: string) =>
  page
    .locator(`#sessions tr[data-key="${id}"] td[data-col="${col}"]`)
    .getAttribute("data-value")
    .then(Number);

test("a session through the proxy appears on the page, its bytes grow, and 'end' closes it", async (t) => {
  if (!requireTool(t, CHROMIUM, "chromium")) return;
  echo = await startEchoServer();
  ferry = await startFerryWithPage(
    { rules: [{ allow: { to: ["127.0.0.0/8"] } }] },
    { inlineUsers: [ALICE] },
    { intervalMs: 250 },
  );
  const page = await openPage(ferry.base, ferry.token);
  // The token leaves the address bar once the cookie holds it.
  assert.equal(new URL(page.url()).search, "");

  const { client, reply } = await socks5Connect(
    ferry.ferry.port,
    { type: "ipv4", host: "127.0.0.1", port: echo.port },
    { user: ALICE.name, password: ALICE.password },
  );
  assert.equal(reply.reply, 0);
  const record = [...ferry.ferry.server.sessions()].find((r) => r.clientPort === client.localPort);
  assert.ok(record, "the server runs the session");
  const id = String(record.id);
  const row = page.locator(`#sessions tr[data-key="${id}"]`);
  await row.waitFor();
  assert.equal(await row.locator('td[data-col="user"]').textContent(), "alice");
  assert.equal(await row.locator('td[data-col="target"]').textContent(), `127.0.0.1:${echo.port}`);

  client.write(Buffer.alloc(4000, 1));
  await client.readBytes(4000);
  await until(async () => (await cellValue(page, id, "up")) >= 4000, "the page to show 4000 bytes up");
  const before = await cellValue(page, id, "down");
  client.write(Buffer.alloc(6000, 2));
  await client.readBytes(6000);
  await until(async () => (await cellValue(page, id, "down")) > before, "the bytes down to grow on the page");
  assert.equal(await cellValue(page, id, "down"), 10_000, "the page shows every byte that came down");
  // The users table counts alice's running session.
  await page
    .locator('#users tr[data-key="alice"] td[data-col="active"]')
    .filter({ hasText: /^1$/ })
    .waitFor();

  const ended = ferry.ferry.nextRecord();
  await row.getByRole("button", { name: "end" }).click();
  await within(client.waitClosed(WAIT_MS), WAIT_MS + 1000, "the client connection to close");
  const done = await within(ended, WAIT_MS, "the session record");
  assert.equal(done.id, record.id);
  assert.equal(done.reason, "ended from the admin page");
  await row.waitFor({ state: "detached" });
  assert.match((await page.locator("#message").textContent()) ?? "", /ended 1 session/);
  assert.ok(
    ferry.logs.some((l) => l.event === "admin.session.end" && l.session === id),
    "the action is logged",
  );
  await page.context().close();
});

test("names from clients show as text: a target with <script> runs nothing", async (t) => {
  if (!requireTool(t, CHROMIUM, "chromium")) return;
  const hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">';
  const now = Date.now();
  // Ferry's own parser refuses such a name; a source that has one anyway shows what the page does.
  const snapshot: LiveSnapshot = {
    at: now,
    sessions: [
      {
        id: "7",
        user: `<b>${hostile}</b>`,
        client: "127.0.0.1:5555",
        target: `${hostile}:443`,
        bytesUp: 1,
        bytesDown: 2,
        startedAt: now - 5000,
      },
    ],
    denials: [
      {
        id: "1",
        at: now,
        client: "127.0.0.1",
        stage: "request",
        target: hostile,
        reason: hostile,
        rule: hostile,
      },
    ],
    users: [{ user: hostile, sessions: 1, active: 1, bytesUp: 1, bytesDown: 2, quota: hostile }],
    columns: [{ key: "quota", label: hostile }],
  };
  const source: LiveSource = {
    snapshot: async () => ({ ...snapshot, at: Date.now() }),
    end: async () => undefined,
    endUser: async () => [],
  };
  const admin = new AdminServer({ host: "127.0.0.1", port: 0 });
  healthRoutes(admin, () => undefined);
  const routes = liveRoutes(admin, source, undefined, { intervalMs: 250 });
  const { port } = await admin.listen();
  try {
    const page = await openPage(`http://127.0.0.1:${port}`, "unused");
    const target = page.locator('#sessions tr[data-key="7"] td[data-col="target"]');
    await target.waitFor();
    assert.equal(await target.textContent(), `${hostile}:443`);
    assert.equal(await page.locator('#sessions td[data-col="user"]').textContent(), `<b>${hostile}</b>`);
    assert.equal(await page.locator('#denials td[data-col="reason"]').textContent(), hostile);
    assert.equal(await page.locator('#users td[data-col="quota"]').textContent(), hostile);
    assert.equal(await page.locator("#user-head th").nth(5).textContent(), hostile);
    // Let a couple of snapshots redraw the tables, then look for anything the names made.
    await page.waitForTimeout(600);
    // Run through the DevTools protocol, which the page's CSP does not govern.
    const made = await page.evaluate(() => {
      const g = globalThis as unknown as {
        __pwned?: number;
        document: { querySelectorAll(s: string): { length: number } };
      };
      return {
        pwned: g.__pwned,
        elements: g.document.querySelectorAll("tbody script, tbody img, tbody b, thead script, thead img")
          .length,
      };
    });
    assert.deepEqual(made, { pwned: undefined, elements: 0 });
    await page.context().close();
  } finally {
    routes.close();
    await admin.close();
  }
});
