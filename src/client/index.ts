/**
 * `ferry/client`: the SOCKS client library (connect, bind, associate, chains, the http(s) agent,
 * socksify) and the protocol types it shares with the server. It loads neither the server nor
 * undici: the undici dispatcher is `ferry/undici`.
 */

export { StreamClosedError, StreamReader } from "../io/reader.js";
export type { SocksAddress } from "../protocol/address.js";
export { Reply, replyName } from "../protocol/errors.js";
export { SocksAgent, type SocksAgentOptions } from "./agent.js";
export {
  type AssociateOptions,
  associate,
  UdpAssociation,
  type UdpAssociationEvents,
} from "./associate.js";
export { type ClientAuthMethod, type ClientAuthResult, noAuth, userPassAuth } from "./auth.js";
export { type BindAccepted, type BindOptions, type BindResult, bind } from "./bind.js";
export type { ClientOptions } from "./chain.js";
export { connect } from "./connect.js";
export { proxyFromEnv } from "./env.js";
export { SocksError, type SocksErrorDetails, type SocksStage } from "./errors.js";
export {
  GssapiClientError,
  type GssapiClientOptions,
  gssapiClientAuth,
  gssapiClientNegotiate,
  gssapiServiceName,
} from "./gssapi.js";
export {
  describeHop,
  type ProxyChain,
  type ProxyHop,
  type ProxyInput,
  parseChain,
  parseProxyUrl,
  parseTarget,
  type Target,
} from "./proxy.js";
export { socksify } from "./socksify.js";
export type { HopTls } from "./tls-options.js";
