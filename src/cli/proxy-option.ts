import { proxyFromEnv } from "../client/env.js";
import { type ProxyHop, parseChain } from "../client/proxy.js";

/** The chain for a client tool: the --proxy flags in order, else FERRY_PROXY, else ALL_PROXY. */
export function chainFromFlags(
  flags: string[] | undefined,
  env: NodeJS.ProcessEnv = process.env,
): ProxyHop[] {
  const urls = flags && flags.length > 0 ? flags : proxyFromEnv(env);
  if (!urls) {
    throw new Error(
      "no proxy given: pass --proxy socks5h://HOST:PORT (repeat it for a chain) or set FERRY_PROXY",
    );
  }
  return parseChain(urls);
}
