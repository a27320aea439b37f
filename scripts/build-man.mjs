#!/usr/bin/env node
// Generates the man pages man/ferry.1 and man/ferry.yaml.5 (run by `prepare`, so `npm pack` ships
// them). Nothing here is a second copy of the docs: ferry(1) takes its commands and options from
// the commander definition in dist/ and its prose from the README; ferry.yaml(5) is the README's
// configuration section followed by docs/policy.md and docs/routes.md. marked-man renders them.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const read = (p) => readFileSync(join(root, p), "utf8");
const pkg = JSON.parse(read("package.json"));
const readme = read("README.md");

/** The body of the README section whose `## ` heading is `title` (without the heading). */
function section(md, title) {
  const lines = md.split("\n");
  const start = lines.indexOf(`## ${title}`);
  if (start < 0) throw new Error(`README.md has no section "## ${title}"`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith("## "));
  return lines
    .slice(start + 1, end < 0 ? undefined : end)
    .join("\n")
    .trim();
}

/** Pushes every heading of a docs page one level down (its `# ` title becomes a `## ` section). */
const demote = (md) => md.replace(/^(#{1,5}) /gm, "#$1 ");
/** Links to other files of the repository mean nothing in a man page: keep their text. */
const unlink = (md) => md.replace(/\[([^\]]+)\]\((?!https?:)[^)]+\)/g, "$1");
/** The README's lead paragraphs: what comes after the title and before the first section. */
const intro = readme
  .split("\n## ")[0]
  .replace(/^# .*\n/, "")
  .trim();

async function commandsSection() {
  const { buildCli } = await import(pathToFileURL(join(root, "dist/src/cli/main.js")).href);
  const out = [];
  const visit = (cmd, prefix) => {
    for (const sub of cmd.commands) {
      const name = `${prefix} ${sub.name()}`;
      if (sub.commands.length === 0) {
        out.push(`### ${name} ${sub.usage()}`, "", `${sub.description()}`, "");
        for (const o of sub.options) out.push(`* \`${o.flags}\`:`, `  ${o.description}`, "");
      }
      visit(sub, name);
    }
  };
  visit(buildCli(), "ferry");
  return out.join("\n");
}

const ferry1 = [
  "# ferry(1) -- a SOCKS4/4a/5 proxy server, client and tools",
  "## SYNOPSIS",
  "`ferry` <command> [<options>]",
  "`ferry serve` [`--config` <file>] [`--listen` <host:port>]...",
  "## DESCRIPTION",
  intro,
  "## COMMANDS",
  await commandsSection(),
  "## SERVING",
  section(readme, "`ferry serve`").replace(/^```\nferry serve[\s\S]*?```\n/, ""),
  "## CLIENT TOOLS",
  section(readme, "Client library and tools"),
  "## FILES",
  "The configuration file is described in ferry.yaml(5). Users files are htpasswd files with bcrypt hashes.",
  "## SEE ALSO",
  "ferry.yaml(5), the README and docs/ shipped with the package",
].join("\n\n");

const ferryYaml5 = [
  "# ferry.yaml(5) -- configuration file of ferry(1)",
  "## SYNOPSIS",
  "`ferry serve --config` <file>",
  "## DESCRIPTION",
  section(readme, "Configuration"),
  demote(read("docs/policy.md")),
  demote(read("docs/routes.md")),
  "## SEE ALSO",
  "ferry(1)",
].join("\n\n");

// The package exports only its library; its CLI sits beside package.json.
const markedMan = join(
  dirname(createRequire(import.meta.url).resolve("marked-man/package.json")),
  "bin",
  "marked-man.js",
);
mkdirSync(join(root, "man"), { recursive: true });
for (const [file, md, sectionNo] of [
  ["ferry.1", ferry1, "1"],
  ["ferry.yaml.5", ferryYaml5, "5"],
]) {
  const r = spawnSync(
    process.execPath,
    [markedMan, "--no-breaks", "--version", pkg.version, "--manual", "Ferry", "--section", sectionNo],
    { input: unlink(md), encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`marked-man failed for ${file}: ${r.stderr}`);
  writeFileSync(join(root, "man", file), r.stdout);
}
console.log("man pages: man/ferry.1, man/ferry.yaml.5");
