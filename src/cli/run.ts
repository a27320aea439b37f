import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describeHop, type ProxyHop } from "../client/proxy.js";
import { chainFromFlags } from "./proxy-option.js";
import { chainsHops, findProgram, isNodeProgram, proxychainsConfig } from "./proxychains.js";

/** How the command is sent through the chain. */
export type RunMode = "auto" | "node" | "proxychains" | "env";

/** Flags of `ferry run`. */
export interface RunFlags {
  proxy?: string[];
  mode?: RunMode;
}

/** proxychains-ng's command (Debian's proxychains4 package). */
const PROXYCHAINS = "proxychains4";
const PROXYCHAINS_HINT =
  "install proxychains4 (Debian/Ubuntu: apt-get install proxychains4; Fedora: dnf install proxychains-ng; macOS: brew install proxychains-ng)";

/** The full URL of a hop, password included: it goes only into the child's environment. */
function urlOf(hop: ProxyHop): string {
  const plain = describeHop(hop);
  if (hop.username === undefined) return plain;
  const cred = `${encodeURIComponent(hop.username)}${hop.password !== undefined ? `:${encodeURIComponent(hop.password)}` : ""}@`;
  return plain.replace(/\/\/[^@]*@/, `//${cred}`);
}

const PROXY_VARIABLES = ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "FERRY_PROXY"];

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
 * Under proxychains every connection already goes through the chain: a program that also
 * honoured ALL_PROXY would send it through the chain to the first hop, so those are removed.
 */
export function proxychainsEnvironment(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const v of PROXY_VARIABLES) {
    delete out[v];
    delete out[v.toLowerCase()];
  }
  return out;
}

/** What will run, and the one line that says how. */
interface Plan {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  line: string;
  cleanup?: () => Promise<void>;
}

async function plan(command: string[], chain: ProxyHop[], mode: RunMode): Promise<Plan> {
  const [name, ...args] = command as [string, ...string[]];
  const chosen = mode === "auto" ? (isNodeProgram(name) ? "node" : "proxychains") : mode;
  const hops = `${chain.length} ${chain.length === 1 ? "proxy" : "proxies"}`;
  if (chosen === "node")
    return {
      file: name,
      args,
      env: runEnvironment(chain),
      line: `ferry run: ${name} runs Node: socksified by a preload hook (net, http, https, tls, fetch) through ${hops}`,
    };
  if (chosen === "env")
    return {
      file: name,
      args,
      env: runEnvironment(chain),
      line:
        chain.length > 1
          ? `ferry run: ${name} gets ALL_PROXY/HTTP(S)_PROXY, which hold the first of ${hops} only, if it honours them`
          : `ferry run: ${name} gets ALL_PROXY/HTTP(S)_PROXY, if it honours them`,
    };
  const proxychains = findProgram(PROXYCHAINS);
  if (!proxychains)
    throw new Error(
      `${name} is not a Node program, and running it through the proxy needs proxychains4, which is not installed: ${PROXYCHAINS_HINT}. ` +
        "Or pass --mode env to only set ALL_PROXY/HTTP(S)_PROXY for programs that honour them",
    );
  const remoteDns = chain[chain.length - 1]!.remoteDns;
  const config = proxychainsConfig(await chainsHops(chain), remoteDns);
  // Private: the file may hold passwords.
  const dir = await mkdtemp(path.join(tmpdir(), "ferry-run-"));
  const file = path.join(dir, "proxychains.conf");
  await writeFile(file, config, { mode: 0o600 });
  return {
    file: proxychains,
    args: ["-q", "-f", file, name, ...args],
    env: proxychainsEnvironment(),
    line: `ferry run: ${name} is not a Node program: running it under proxychains4 (strict chain of ${hops}${remoteDns ? ", names resolved by the last" : ""})`,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * `ferry run -- COMMAND ARGS...`: runs the command with the chain applied. Node programs are
 * socksified by a preload hook (net, http, https, tls, fetch); any other program runs under
 * proxychains4 with a configuration for the whole chain; `--mode env` only sets ALL_PROXY and
 * HTTP(S)_PROXY. One line on stderr names the mechanism. Exits with the command's status.
 */
export async function runTool(command: string[], flags: RunFlags): Promise<number> {
  const chain = chainFromFlags(flags.proxy);
  if (command.length === 0) throw new Error("nothing to run: ferry run --proxy URL -- COMMAND ARGS...");
  const p = await plan(command, chain, flags.mode ?? "auto");
  process.stderr.write(`${p.line}\n`);
  try {
    const child = spawn(p.file, p.args, { stdio: "inherit", env: p.env });
    const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
    process.on("SIGINT", forward("SIGINT"));
    process.on("SIGTERM", forward("SIGTERM"));
    return await new Promise((resolve, reject) => {
      child.on("error", (err) => reject(new Error(`cannot run ${command[0]}: ${err.message}`)));
      child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 + 15 : 1)));
    });
  } finally {
    await p.cleanup?.();
  }
}
