/** `ferry/undici`: the undici dispatcher, apart from `ferry/client` so the client does not load undici. */
export { SocksDispatcher, type SocksDispatcherOptions } from "./dispatcher.js";
