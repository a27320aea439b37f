#!/usr/bin/env node
// Builds the optional GSS-API add-on (native/gssapi) with node-gyp.
//   node scripts/build-gssapi.mjs             build, show the compiler's output, fail loudly
//   node scripts/build-gssapi.mjs --optional  (from `prepare`) on failure print one warning line
//                                             and succeed, so `npm install` works without it
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const optional = process.argv.includes("--optional");
const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const addonDir = join(root, "native", "gssapi");
const prefix = dirname(dirname(process.execPath));

// npm tells its scripts where its bundled node-gyp is; otherwise look beside npm, then on PATH.
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"),
    join(root, "node_modules", "node-gyp", "bin", "node-gyp.js"),
  ];
  return candidates.find((c) => c && existsSync(c));
}

const nodeGyp = findNodeGyp();
const args = ["rebuild", "--directory", addonDir];
// Use the headers installed with node (no download: the machine may be offline).
if (existsSync(join(prefix, "include", "node", "node_api.h"))) args.push(`--nodedir=${prefix}`);

const hint =
  "apt-get install libkrb5-dev g++ make python3, then `npm rebuild ferry` (in a ferry checkout: npm run build:gssapi)";
let result;
if (!nodeGyp) {
  result = { status: 1, error: new Error("node-gyp not found") };
} else {
  result = spawnSync(process.execPath, [nodeGyp, ...args], {
    cwd: root,
    stdio: optional ? "pipe" : "inherit",
    encoding: "utf8",
  });
}

if (result.status === 0) {
  if (optional) console.log("ferry: GSSAPI add-on built (native/gssapi/build/Release/ferry_gssapi.node)");
  process.exit(0);
}
const why = result.error
  ? result.error.message
  : (
      `${result.stderr ?? ""}`.split("\n").find((l) => /error|not found|No such/i.test(l)) ?? "build failed"
    ).trim();
if (optional) {
  console.warn(`ferry: warning: GSSAPI add-on not built (${why.slice(0, 160)}); to enable it: ${hint}`);
  process.exit(0);
}
console.error(`ferry: the GSSAPI add-on did not build: ${why}. Needs: ${hint.split(",")[0]}`);
process.exit(1);
