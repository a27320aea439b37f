import type { Config } from "../config/schema.js";
import { formatAddress } from "../protocol/address.js";
import { buildContext } from "./build-context.js";
import type { FerryServer, ListeningAddress } from "./server.js";
import type { ServerState } from "./state.js";

export interface ReloadResult {
  ok: boolean;
  /** One line for the log and for `ferry reload`. */
  message: string;
  opened: ListeningAddress[];
  closed: ListeningAddress[];
}

/**
 * Re-reads the configuration and users and swaps them in as one step: rules, users, limits and
 * listen addresses change together or not at all. Sessions already running keep the context
 * they started with. Reloads are serialised.
 */
export class Reloader {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly server: FerryServer,
    private readonly load: () => Promise<Config>,
    private readonly state: ServerState,
  ) {}

  /**
   * `generation` numbers the new configuration (rule counters are kept per generation); the
   * workers' primary gives every worker the same one, else it is the running one's plus one.
   */
  reload(generation?: number): Promise<ReloadResult> {
    const next = this.chain.then(() => this.once(generation ?? this.state.generation + 1));
    this.chain = next.catch(() => {});
    return next;
  }

  private async once(generation: number): Promise<ReloadResult> {
    const refused = (err: unknown): ReloadResult => ({
      ok: false,
      message: `reload refused, the running configuration stays: ${(err as Error).message}`,
      opened: [],
      closed: [],
    });
    let prepared: Awaited<ReturnType<FerryServer["prepareListen"]>>;
    let context: Awaited<ReturnType<typeof buildContext>>;
    try {
      const config = await this.load();
      this.state.limits.adopt(config, generation);
      await this.state.quotas.prepare(config);
      context = await buildContext(config, this.state);
      prepared = await this.server.prepareListen(config.listen);
    } catch (err) {
      return refused(err);
    }
    this.state.generation = generation;
    // The new quotas apply to the running counts, and so to the sessions already running.
    this.state.quotas.adopt(context.config);
    this.server.update(context);
    const closed = await prepared.commit();
    const parts = [
      `${context.config.rules?.length ?? "no"} rules`,
      `${context.users.size} users`,
      ...(prepared.opened.length
        ? [`now also listening on ${prepared.opened.map(formatAddress).join(", ")}`]
        : []),
      ...(closed.length ? [`stopped listening on ${closed.map(formatAddress).join(", ")}`] : []),
      // Which certificate each TLS listener now serves, so a rotation can be checked in the log.
      ...[...context.tls].map(([where, t]) => `TLS ${where} certificate sha256 ${t.fingerprint}`),
    ];
    return {
      ok: true,
      message: `configuration reloaded: ${parts.join("; ")}`,
      opened: prepared.opened,
      closed,
    };
  }
}
