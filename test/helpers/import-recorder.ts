/**
 * Loaded with `node --import` into a fresh process: records every module URL the process imports
 * (through import-hooks.ts), so a test can tell which of Ferry's modules, and which packages, an
 * entry point pulls in. `importedUrls(spec)` imports `spec` and returns the URLs resolved so far.
 */
import { register } from "node:module";
import { MessageChannel } from "node:worker_threads";

const urls: string[] = [];
const { port1, port2 } = new MessageChannel();
port1.on("message", (url: string) => urls.push(url));
port1.unref();
register(new URL("./import-hooks.js", import.meta.url), { data: { port: port2 }, transferList: [port2] });

/** Imports `spec`, then waits for a sentinel's URL: the port is FIFO, so every earlier one is in. */
async function importedUrls(spec: string): Promise<string[]> {
  await import(spec);
  const sentinel = `data:text/javascript,export default ${Date.now()}`;
  await import(sentinel);
  const deadline = Date.now() + 10_000;
  while (!urls.includes(sentinel)) {
    if (Date.now() > deadline) throw new Error("the import hooks reported nothing within 10 s");
    await new Promise((r) => setTimeout(r, 10));
  }
  return urls.filter((u) => u !== sentinel);
}

(globalThis as { importedUrls?: typeof importedUrls }).importedUrls = importedUrls;
