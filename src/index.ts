/**
 * Ferry's package entry: the SOCKS client library (connect, bind, associate, chains, agents)
 * and the pure protocol codecs it shares with the server, plus the undici dispatcher. The
 * narrower entries are `ferry/client`, `ferry/undici`, `ferry/server` and `ferry/protocol`.
 */

export { SocksDispatcher, type SocksDispatcherOptions } from "./client/dispatcher.js";
export * from "./client/index.js";
