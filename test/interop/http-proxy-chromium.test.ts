import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { chromium } from "playwright-core";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { LOOPBACK_RULES } from "../helpers/http-proxy.js";
import { listenClosable, waitFor } from "../helpers/net.js";
import { requireTool } from "../helpers/tools.js";

const CHROMIUM = "/usr/bin/chromium";

/** A page and the script it loads, so the browser makes two requests through the proxy. */
async function startSite(): Promise<{
  port: number;
  token: string;
  paths: string[];
  close(): Promise<void>;
}> {
  const token = Math.random().toString(36).slice(2);
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? "");
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(
        `<!doctype html><title>ferry</title><p id="p">page ${token}</p><script src="/app.js"></script>`,
      );
    } else if (req.url === "/app.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(`document.getElementById("p").dataset.script = "ran ${token}";`);
    } else {
      res.writeHead(404).end();
    }
  });
  const listening = await listenClosable(server);
  return {
    port: listening.port,
    token,
    paths,
    close: listening.close,
  };
}

describe("headless chromium with --proxy-server=http://", { timeout: 120_000 }, () => {
  let ferry: RunningFerry;
  before(async () => {
    ferry = await startFerry({ rules: LOOPBACK_RULES });
  });
  after(async () => {
    await ferry?.close();
  });

  test("loads a loopback page and its script through Ferry, seen in Ferry's records", async (t) => {
    if (!requireTool(t, CHROMIUM, "chromium")) return;
    const site = await startSite();
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--no-sandbox",
        "--disable-background-networking",
        `--proxy-server=http://127.0.0.1:${ferry.port}`,
        // Chromium sends loopback direct unless told not to.
        "--proxy-bypass-list=<-loopback>",
      ],
      timeout: 60_000,
    });
    try {
      const page = await browser.newPage();
      const response = await page.goto(`http://127.0.0.1:${site.port}/`, { timeout: 30_000 });
      assert.equal(response?.status(), 200);
      assert.equal(response?.headers().via, "1.1 ferry");
      assert.equal(await page.textContent("#p"), `page ${site.token}`);
      // A string: this file is compiled without the DOM's types.
      await page.waitForFunction('document.getElementById("p")?.dataset.script !== undefined', null, {
        timeout: 10_000,
      });
      assert.equal(await page.getAttribute("#p", "data-script"), `ran ${site.token}`);
      assert.ok(site.paths.includes("/") && site.paths.includes("/app.js"));
    } finally {
      await browser.close();
    }
    const mine = () => ferry.records.filter((r) => r.target === `127.0.0.1:${site.port}`);
    await waitFor(() => mine().length >= 2, 10_000, "records of the page and the script");
    for (const r of mine()) {
      assert.equal(r.protocol, "http");
      assert.equal(r.command, "http");
      assert.equal(r.reply, 0);
    }
    await site.close();
  });
});
