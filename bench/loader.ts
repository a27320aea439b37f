/**
 * The load generator as the orchestrator sees it: bench/load.ts (Node) or bench/load.c (compiled
 * with cc at bench time), both answering LoadRequests over the Node IPC channel with the same
 * LoadReply shape.
 */
import type { ChildProcess } from "node:child_process";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { readyMessage, spawnNode, spawnWithFiles } from "./children.js";
import type { LoadReply, LoadRequest } from "./protocol.js";

export type LoaderKind = "node" | "c";

export function hasCc(): boolean {
  return spawnSync("sh", ["-c", "command -v cc"], { stdio: "ignore" }).status === 0;
}

/**
 * Compiles bench/load.c into ~/.cache/ferry-bench (or $XDG_CACHE_HOME), named by the source's
 * hash so that an edit rebuilds it and an unchanged source is not rebuilt.
 */
function compileC(root: string): string {
  const source = path.join(root, "bench", "load.c");
  const hash = createHash("sha256").update(readFileSync(source)).digest("hex").slice(0, 16);
  const dir = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "ferry-bench");
  const binary = path.join(dir, `load-${hash}`);
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const partial = `${binary}.${process.pid}.tmp`;
  const cc = spawnSync("cc", ["-O2", "-Wall", "-o", partial, source], { encoding: "utf8", timeout: 60_000 });
  if (cc.status !== 0) throw new Error(`cc failed to compile ${source}:\n${cc.stderr}`);
  renameSync(partial, binary);
  return binary;
}

export class Loader {
  private nextId = 1;
  private readonly pending = new Map<number, (r: LoadReply) => void>();

  private constructor(
    readonly kind: LoaderKind,
    readonly child: ChildProcess,
  ) {
    child.on("message", (m: LoadReply | { ready: true }) => {
      if ("id" in m) {
        this.pending.get(m.id)?.(m);
        this.pending.delete(m.id);
      }
    });
    child.once("exit", (code, signal) => {
      for (const done of this.pending.values())
        done({ id: 0, ok: false, error: `the load generator exited (${code ?? signal})` });
      this.pending.clear();
    });
  }

  /** `here` is dist/bench (load.js), `root` the repository (bench/load.c). */
  static async start(kind: LoaderKind, here: string, root: string, nofile: number): Promise<Loader> {
    const child =
      kind === "node"
        ? spawnNode([path.join(here, "load.js")], nofile, "ipc")
        : spawnWithFiles(compileC(root), [], nofile, ["ignore", "inherit", "inherit", "ipc"]);
    await readyMessage(child, `load generator (${kind})`);
    return new Loader(kind, child);
  }

  run<T>(req: LoadRequest): Promise<T> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, (r) => (r.ok ? resolve(r.result as T) : reject(new Error(r.error))));
      this.child.send({ id, req });
    });
  }
}
