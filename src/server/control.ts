import { lstat, rm } from "node:fs/promises";
import net from "node:net";
import type { ReloadResult } from "./reload.js";

/**
 * The control socket: a Unix socket (mode 0600, so only the server's user can use it) that takes
 * one JSON line `{"command":"reload"}` and answers one JSON line `{"ok":...,"message":...}`.
 */
export async function startControl(
  file: string,
  handlers: { reload(): Promise<ReloadResult> },
): Promise<{ close(): Promise<void> }> {
  await removeStale(file);
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    socket.setTimeout(10_000, () => socket.destroy());
    let text = "";
    socket.on("data", async (chunk: Buffer) => {
      text += chunk.toString("utf8");
      if (text.length > 4096) return socket.destroy();
      const nl = text.indexOf("\n");
      if (nl < 0) return;
      let command: unknown;
      try {
        command = (JSON.parse(text.slice(0, nl)) as { command?: unknown }).command;
      } catch {
        command = undefined;
      }
      if (command === "reload") {
        const r = await handlers.reload();
        socket.end(`${JSON.stringify({ ok: r.ok, message: r.message })}\n`);
      } else {
        socket.end(
          `${JSON.stringify({ ok: false, message: 'unknown command; send {"command":"reload"}' })}\n`,
        );
      }
    });
  });
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(file, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    throw new Error(`cannot open the control socket ${file}: ${(err as Error).message}`);
  } finally {
    process.umask(oldMask);
  }
  server.on("error", () => {});
  return {
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(file, { force: true });
    },
  };
}

/** A socket file left by a server that died is removed; one a live server answers on is an error. */
async function removeStale(file: string): Promise<void> {
  const stat = await lstat(file).catch(() => undefined);
  if (!stat) return;
  if (!stat.isSocket()) throw new Error(`${file} exists and is not a socket; pick another --control path`);
  const alive = await new Promise<boolean>((resolve) => {
    const s = net.connect(file);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  if (alive) {
    throw new Error(
      `another server already answers on the control socket ${file}; stop it or pick another --control path`,
    );
  }
  await rm(file, { force: true });
}

/** Sends one command to a running server's control socket and returns its answer. */
export function sendControl(
  file: string,
  command: string,
  timeoutMs = 30_000,
): Promise<{ ok: boolean; message: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(file);
    let text = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer from ${file} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on("connect", () => s.write(`${JSON.stringify({ command })}\n`));
    s.on("data", (c: Buffer) => {
      text += c.toString("utf8");
    });
    s.on("end", () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(text) as { ok: boolean; message: string });
      } catch {
        reject(new Error(`unexpected answer from ${file}: ${text.slice(0, 200)}`));
      }
    });
    s.on("error", (err) => {
      clearTimeout(timer);
      const code = (err as NodeJS.ErrnoException).code;
      reject(
        new Error(
          code === "ENOENT" || code === "ECONNREFUSED"
            ? `no server listens on the control socket ${file}; is \`ferry serve\` running with --control ${file}?`
            : `cannot reach ${file}: ${err.message}`,
        ),
      );
    });
  });
}
