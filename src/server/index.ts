/**
 * `ferry/server`: the SOCKS server, embeddable in a Node program. `startServer` is what
 * `ferry serve` runs, without the command line, the signals or the logs on stderr.
 */

export { gssapiAvailable } from "../auth/gssapi-native.js";
export { ConfigError, loadConfig } from "../config/load.js";
export type { Config, FileConfig } from "../config/schema.js";
export { closeLogger, createLogger, type Logger, type LoggerOptions } from "../observe/logger.js";
export { type FerryHandle, type StartServerOptions, startServer } from "./embed.js";
export type { ReloadResult } from "./reload.js";
export {
  FerryServer,
  type FerryServerEvents,
  ListenError,
  type ListeningAddress,
} from "./server.js";
