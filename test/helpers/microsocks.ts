import { type Daemon, startDaemon } from "./process.js";

export const MICROSOCKS = "microsocks";

export interface MicrosocksOptions {
  /** Require SOCKS5 username/password (microsocks needs both or neither). */
  user?: string;
  password?: string;
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Address outbound connections bind to (microsocks -b). */
  bindAddress?: string;
  lifetimeSec?: number;
}

export interface RunningMicrosocks extends Daemon {
  /** socks5h://[user:password@]host:port */
  url: string;
}

/** Starts microsocks (a small SOCKS5-only server) on a free loopback port. */
export async function startMicrosocks(options: MicrosocksOptions = {}): Promise<RunningMicrosocks> {
  if ((options.user === undefined) !== (options.password === undefined)) {
    throw new Error("microsocks needs both user and password, or neither");
  }
  const host = options.host ?? "127.0.0.1";
  const daemon = await startDaemon({
    name: "microsocks",
    command: MICROSOCKS,
    host,
    lifetimeSec: options.lifetimeSec,
    args: (port) => [
      "-i",
      host,
      "-p",
      String(port),
      ...(options.user !== undefined ? ["-u", options.user, "-P", options.password!] : []),
      ...(options.bindAddress ? ["-b", options.bindAddress] : []),
    ],
  });
  const auth =
    options.user !== undefined
      ? `${encodeURIComponent(options.user)}:${encodeURIComponent(options.password!)}@`
      : "";
  const hostPart = host.includes(":") ? `[${host}]` : host;
  return { ...daemon, url: `socks5h://${auth}${hostPart}:${daemon.port}` };
}
