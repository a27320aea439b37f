/**
 * Preload for `ferry run`: loaded with `node --import` (through NODE_OPTIONS), it socksifies the
 * program with the chain in FERRY_PROXY (or a socks ALL_PROXY) before the program's code runs.
 */
import { proxyFromEnv } from "./env.js";
import { socksify } from "./socksify.js";

const chain = proxyFromEnv();
if (chain) await socksify(chain);
