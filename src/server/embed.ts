import { type ConfigSources, loadConfig } from "../config/load.js";
import type { Config, FileConfig } from "../config/schema.js";
import type { Logger } from "../observe/logger.js";
import { logPolicy } from "../observe/policy-log.js";
import { logQuotas } from "../observe/quota-log.js";
import { logSessions } from "../observe/session-log.js";
import { logSharedState, sharedQuotas, sharedStore } from "../shared/state-store.js";
import { buildContext } from "./build-context.js";
import type { ServerContext } from "./context.js";
import { cutOverQuota } from "./quota-cut.js";
import { Reloader, type ReloadResult } from "./reload.js";
import { FerryServer, type ListeningAddress } from "./server.js";
import { ServerState } from "./state.js";

/** What to serve: a configuration file, a configuration object (the file's keys), or both. */
export interface StartServerOptions {
  /** A YAML or JSON file, as `ferry serve --config` takes; re-read on every reload. */
  file?: string;
  /** The file's keys as an object; they win over the file's. Relative paths are from the cwd. */
  config?: Partial<FileConfig>;
  /** Users accepted besides the users file, as `ferry serve --user` gives them. */
  users?: { name: string; password: string }[];
  /** A pino logger for the session and policy lines `ferry serve` writes; none: nothing is logged. */
  logger?: Logger;
}

/** A running server, as {@link startServer} returns it. */
export interface FerryHandle {
  /** The addresses listened on (with the ports the system picked for port 0). */
  readonly addresses: ListeningAddress[];
  /** The server itself: its "session" events, counters and update(). */
  readonly server: FerryServer;
  /** The configuration in force. */
  readonly config: Config;
  /**
   * Re-reads the sources (with `config`, replaces the object first) and swaps rules, users,
   * limits and listen addresses in at once; a bad configuration is refused and the old one stays.
   */
  reload(config?: Partial<FileConfig>): Promise<ReloadResult>;
  /** Stops accepting, lets sessions finish for up to `drainMs` (default timeouts.drain), cuts the rest. */
  stop(drainMs?: number): Promise<void>;
}

/**
 * A server built from `config`, its session and policy lines going to `log`, and the reloader
 * that re-reads `load`: the pieces `ferry serve` and startServer put together alike. Not yet
 * listening.
 */
export async function assembleServer(
  config: Config,
  state: ServerState,
  load: () => Promise<Config>,
  log?: Logger,
): Promise<{ server: FerryServer; reloader: Reloader; context: ServerContext }> {
  await state.quotas.prepare(config);
  state.quotas.adopt(config);
  const context = await buildContext(config, state);
  const server = new FerryServer(context);
  cutOverQuota(server, state);
  if (log) {
    logSessions(server, log, { starts: config.log.sessionStart });
    logPolicy(state, log);
    logQuotas(state, log);
    if (config.state) logSharedState(state.store, config.state.redis, log);
  }
  return { server, reloader: new Reloader(server, load, state), context };
}

/**
 * Starts a Ferry server in this process from the same pieces `ferry serve` uses (configuration
 * loading and checks, context, listeners, reload); it installs no signal handlers. Rejects with a
 * ConfigError for a bad configuration and a ListenError for an address that cannot be opened.
 */
export async function startServer(options: StartServerOptions = {}): Promise<FerryHandle> {
  const sources: ConfigSources = {
    file: options.file,
    overrides: options.config,
    inlineUsers: options.users,
  };
  let current = await loadConfig(sources);
  const load = async () => {
    const next = await loadConfig(sources);
    current = next;
    return next;
  };
  const shared = await sharedStore(current);
  const state = new ServerState(shared, 1, sharedQuotas(shared, 1));
  const { server, reloader } = await assembleServer(current, state, load, options.logger);
  const addresses = await server.listen();
  return {
    addresses,
    server,
    get config() {
      return current;
    },
    async reload(config?: Partial<FileConfig>) {
      const previous = sources.overrides;
      if (config !== undefined) sources.overrides = config;
      const result = await reloader.reload();
      // A refused object is not kept for the next reload.
      if (!result.ok) sources.overrides = previous;
      return result;
    },
    async stop(drainMs?: number) {
      await server.close(drainMs ?? current.timeouts.drain);
      // Every count in the quota state file.
      await state.quotas.close();
    },
  };
}
