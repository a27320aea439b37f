import { type ConfigSources, loadConfig } from "../../src/config/load.js";
import type { FileConfig } from "../../src/config/schema.js";
import { buildContext } from "../../src/server/build-context.js";
import type { ServerContext, SessionRecord } from "../../src/server/context.js";
import { FerryServer } from "../../src/server/server.js";

export interface RunningFerry {
  server: FerryServer;
  context: ServerContext;
  host: string;
  port: number;
  /** socks5h://host:port, for clients that take a URL. */
  url: string;
  /** Every session record emitted so far, in order of ending. */
  records: SessionRecord[];
  /** Resolves with the next record (or the n-th from now). */
  nextRecord(): Promise<SessionRecord>;
  refused: string[];
  close(): Promise<void>;
}

/**
 * Starts a Ferry server in this process on an ephemeral loopback port. `config` is the same
 * object a configuration file holds; listen defaults to 127.0.0.1:0.
 */
export async function startFerry(
  config: Partial<FileConfig> = {},
  extra: Omit<ConfigSources, "overrides"> = {},
  tweak?: (ctx: ServerContext) => ServerContext,
): Promise<RunningFerry> {
  const loaded = await loadConfig({ ...extra, overrides: { listen: ["127.0.0.1:0"], ...config } });
  let context = await buildContext(loaded);
  if (tweak) context = tweak(context);
  const server = new FerryServer(context);
  const records: SessionRecord[] = [];
  const refused: string[] = [];
  const waiters: ((r: SessionRecord) => void)[] = [];
  server.on("session", (r) => {
    records.push(r);
    waiters.shift()?.(r);
  });
  server.on("refused", (r) => refused.push(r.reason));
  const [first] = await server.listen();
  const host = first!.host;
  const port = first!.port;
  return {
    server,
    context,
    host,
    port,
    url: `socks5h://${host.includes(":") ? `[${host}]` : host}:${port}`,
    records,
    refused,
    nextRecord: () => new Promise((resolve) => waiters.push(resolve)),
    close: () => server.close(0),
  };
}
