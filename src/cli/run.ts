import { spawn } from "node:child_process";
import { describeHop, type ProxyHop } from "../client/proxy.js";
import { chainFromFlags } from "./proxy-option.js";

/** Flags of `ferry run`. */
export interface RunFlags {
  proxy?: string[];
}

/** The full URL of a hop, password included: it goes only into the child's environment. */
function urlOf(hop: ProxyHop): string {
  const plain = describeHop(hop);
  if (hop.username === undefined) return plain;
  const cred = `${encodeURIComponent(hop.username)}${hop.password !== undefined ? `:${encodeURIComponent(hop.password)}` : ""}@`;
  return plain.replace(/\/\/[^@]*@/, `//${cred}`);
}

/** The environment for the child: preload for Node programs, proxy variables for the rest. */
export function runEnvironment(chain: ProxyHop[], env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const preload = new URL("../client/preload.js", import.meta.url).href;
  const urls = chain.map(urlOf);
  const first = urls[0]!;
  return {
    ...env,
    FERRY_PROXY: urls.join(","),
    NODE_OPTIONS: `${env.NODE_OPTIONS ?? ""} --import "${preload}"`.trim(),
    // curl, git, pip and most tools read these; they take a single proxy, so a chain's first hop.
    ALL_PROXY: first,
    all_proxy: first,
    HTTPS_PROXY: first,
    https_proxy: first,
    HTTP_PROXY: first,
    http_proxy: first,
  };
}

/**
 * `ferry run -- COMMAND ARGS...`: runs the command with the chain applied. Node programs are
 * socksified by a preload hook (net, http, https, tls, fetch); other programs get ALL_PROXY and
 * HTTP(S)_PROXY, which they may or may not honour. Exits with the command's status.
 */
export async function runTool(command: string[], flags: RunFlags): Promise<number> {
  const chain = chainFromFlags(flags.proxy);
  if (command.length === 0) throw new Error("nothing to run: ferry run --proxy URL -- COMMAND ARGS...");
  if (chain.length > 1) {
    process.stderr.write(
      "ferry run: non-Node programs see only the first proxy of the chain (ALL_PROXY holds one URL)\n",
    );
  }
  if (chain[0]!.tls && !chain[0]!.http) {
    process.stderr.write(
      "ferry run: non-Node programs do not know socks5+tls:// (ALL_PROXY); only Node programs go through it\n",
    );
  }
  const child = spawn(command[0]!, command.slice(1), { stdio: "inherit", env: runEnvironment(chain) });
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  process.on("SIGINT", forward("SIGINT"));
  process.on("SIGTERM", forward("SIGTERM"));
  return new Promise((resolve, reject) => {
    child.on("error", (err) => reject(new Error(`cannot run ${command[0]}: ${err.message}`)));
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 + 15 : 1)));
  });
}
