/**
 * Ferry's package entry: the SOCKS client library (connect, bind, associate, chains, agents)
 * and the pure protocol codecs it shares with the server.
 */
export { SocksAgent, type SocksAgentOptions } from "./client/agent.js";
export {
  type AssociateOptions,
  associate,
  UdpAssociation,
  type UdpAssociationEvents,
} from "./client/associate.js";
export { type ClientAuthMethod, type ClientAuthResult, noAuth, userPassAuth } from "./client/auth.js";
export { type BindAccepted, type BindOptions, type BindResult, bind } from "./client/bind.js";
export type { ClientOptions } from "./client/chain.js";
export { connect } from "./client/connect.js";
export { SocksDispatcher, type SocksDispatcherOptions } from "./client/dispatcher.js";
export { proxyFromEnv } from "./client/env.js";
export { SocksError, type SocksErrorDetails, type SocksStage } from "./client/errors.js";
export {
  GssapiClientError,
  type GssapiClientOptions,
  gssapiClientAuth,
  gssapiClientNegotiate,
  gssapiServiceName,
} from "./client/gssapi.js";
export {
  describeHop,
  type ProxyChain,
  type ProxyHop,
  type ProxyInput,
  parseChain,
  parseProxyUrl,
  parseTarget,
  type Target,
} from "./client/proxy.js";
export { socksify } from "./client/socksify.js";
export { StreamClosedError, StreamReader } from "./io/reader.js";
export type { SocksAddress } from "./protocol/address.js";
export { Reply, replyName } from "./protocol/errors.js";
