import { readFileSync } from "node:fs";
import { Argument, Command, Option } from "commander";
import { check } from "./check.js";
import { bashCompletion } from "./completion.js";
import { connectTool } from "./connect.js";
import { doctor } from "./doctor.js";
import { forwardTool } from "./forward.js";
import { reloadCommand } from "./reload.js";
import { runTool } from "./run.js";
import { serve } from "./serve.js";
import { type UsersAddOptions, usersAdd, usersList, usersRemove } from "./users.js";

const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
  version: string;
};
const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function buildCli(): Command {
  const program = new Command("ferry")
    .description("Ferry: a SOCKS4/4a/5 proxy server, client and tools")
    .version(pkg.version, "-V, --version")
    .showHelpAfterError();

  program
    .command("serve")
    .description("run the SOCKS server (default 127.0.0.1:1080, no authentication, loopback clients only)")
    .option("-c, --config <file>", "YAML or JSON configuration file")
    .option(
      "-l, --listen <host:port>",
      "listen address, repeatable: 127.0.0.1:1080, [::1]:1080, 0.0.0.0:1080",
      collect,
    )
    .option("-u, --user <name:password>", "accept this user (RFC 1929), repeatable", collect)
    .option("--users <file>", "htpasswd file with bcrypt hashes (see `ferry users add`)")
    .option(
      "--auth <methods>",
      "methods offered in order of preference: none, userpass, gssapi (comma separated)",
      collect,
    )
    .option("--allow-open-proxy", "allow listening on a non-loopback address without authentication")
    .option("--no-http", "SOCKS only: answer HTTP proxy clients 400 (http: false)")
    .option("--log-level <level>", "trace, debug, info, warn, error")
    .addOption(new Option("--log-format <format>", "log format").choices(["json", "pretty"]))
    .option("--control <path>", "Unix socket for `ferry reload` (mode 0600); SIGHUP reloads too")
    .option("--workers <n>", "processes sharing the listen addresses: a number, or auto (one per core)")
    .action(async (opts) => {
      process.exitCode = await serve(opts);
    });

  const proxyHelp =
    "proxy URL (socks4/socks4a/socks5/socks5h://[user:pass@]host:port; http/https:// for HTTP CONNECT; socks5+tls/socks5h+tls:// for SOCKS5 in TLS, with ?ca=FILE&cert=FILE&key=FILE&servername=NAME: docs/tls.md), repeat for a chain; default $FERRY_PROXY or $ALL_PROXY";
  const ms = (v: string) => Number.parseInt(v, 10);
  program
    .command("connect <host> <port>")
    .description("connect stdin/stdout to HOST:PORT through the proxy (netcat, ssh ProxyCommand)")
    .option("-p, --proxy <url>", proxyHelp, collect)
    .option("--timeout <ms>", "handshake timeout in milliseconds", ms)
    .action(async (host: string, port: string, opts) => {
      process.exitCode = await connectTool(host, port, opts);
    });
  program
    .command("forward <spec...>")
    .description("forward local ports through the proxy, like ssh -L: [BIND_ADDR:]LISTEN_PORT:HOST:PORT")
    .option("-p, --proxy <url>", proxyHelp, collect)
    .option("--timeout <ms>", "handshake timeout in milliseconds", ms)
    .option("--log-level <level>", "trace, debug, info, warn, error")
    .addOption(new Option("--log-format <format>", "log format").choices(["json", "pretty"]))
    .action(async (specs: string[], opts) => {
      process.exitCode = await forwardTool(specs, opts);
    });
  program
    .command("run")
    .description(
      "run a command through the proxy: Node programs are socksified, others run under proxychains4",
    )
    .option("-p, --proxy <url>", proxyHelp, collect)
    .addOption(
      new Option("--mode <mode>", "auto: Node preload or proxychains4; env: ALL_PROXY only")
        .choices(["auto", "node", "proxychains", "env"])
        .default("auto"),
    )
    .argument("<command...>", "the command and its arguments, after --")
    .action(async (command: string[], opts) => {
      process.exitCode = await runTool(command, opts);
    });

  program
    .command("check")
    .description(
      "validate a configuration, or ask it one question: prints the decision, the deciding rule with its line, and why earlier rules did not match (exit 0 allow, 1 deny, 2 invalid)",
    )
    .requiredOption("-c, --config <file>", "YAML or JSON configuration file")
    .option("--from <addr>", "the client's address")
    .option("--user <name>", "the authenticated user (SOCKS5)")
    .option(
      "--method <method>",
      "authentication method: none, userpass, gssapi, tls-cert (default: userpass with --user)",
    )
    .option("--socks-version <n>", "4 or 5", "5")
    .option("--command <command>", "connect, bind or udp", "connect")
    .option("--to <host:port>", "the destination")
    .option("--resolve <ip>", "check this address instead of resolving the name (repeatable)", collect)
    .action(async (opts) => {
      process.exitCode = await check(opts);
    });

  program
    .command("reload")
    .description("make a running `ferry serve` re-read its configuration and users (or send it SIGHUP)")
    .option("--control <path>", "the server's control socket")
    .option("-c, --config <file>", "read the control socket path from this configuration")
    .action(async (opts) => {
      process.exitCode = await reloadCommand(opts);
    });

  const users = program.command("users").description("manage an htpasswd users file (bcrypt)");
  users
    .command("add <file> <name>")
    .description("add or update a user; the password is prompted for, or read from stdin when piped")
    .option("--cost <n>", "bcrypt cost factor", (v) => Number.parseInt(v, 10), 10)
    .option("--password-stdin", "read the password from the first line of stdin")
    .option("--insecure-password <password>", "the password itself (visible in ps and shell history)")
    .action(async (file: string, name: string, opts: UsersAddOptions) => {
      process.exitCode = await usersAdd(file, name, opts);
    });
  users
    .command("remove <file> <name>")
    .description("remove a user")
    .action(async (file: string, name: string) => {
      process.exitCode = await usersRemove(file, name);
    });
  users
    .command("list <file>")
    .description("list user names")
    .action(async (file: string) => {
      process.exitCode = await usersList(file);
    });
  program
    .command("doctor")
    .description(
      "print the version, whether GSSAPI is available, and whether the open-files limit fits the limits",
    )
    .option("-c, --config <file>", "check the limits of this configuration instead of the defaults")
    .action(async (opts) => {
      process.exitCode = await doctor(pkg.version, opts);
    });
  program
    .command("completion")
    .description("print a shell completion script: ferry completion bash > /etc/bash_completion.d/ferry")
    .addArgument(new Argument("<shell>", "the shell").choices(["bash"]))
    .action(() => {
      process.stdout.write(bashCompletion(program));
    });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (err) {
    process.stderr.write(`ferry: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
