import type { Duplex } from "node:stream";
import type { StreamReader } from "../io/reader.js";
import { Method } from "../protocol/socks5.js";
import { type Credentials, encodeUserPassRequest, parseUserPassReply } from "../protocol/userpass.js";

/**
 * What a client-side method's sub-negotiation leaves behind. A method that protects the rest of
 * the connection (GSSAPI integrity/confidentiality, RFC 1961) returns the wrapping stream and a
 * reader over it; the request, reply and all data then go through it.
 */
export interface ClientAuthResult {
  stream?: Duplex;
  reader?: StreamReader;
}

/**
 * A SOCKS5 authentication method as the client runs it: the METHOD code offered in the greeting
 * and the sub-negotiation run once the proxy selects it. Throw to fail; the caller turns the
 * error into a SocksError naming the hop.
 */
export interface ClientAuthMethod {
  /** METHOD code (RFC 1928 §3): 0x00 none, 0x01 GSSAPI, 0x02 username/password. */
  readonly code: number;
  /** Short name for messages: "none", "userpass", "gssapi". */
  readonly name: string;
  negotiate(stream: Duplex, reader: StreamReader): Promise<ClientAuthResult>;
}

/** "No authentication required" (METHOD 0x00): nothing to negotiate. */
export const noAuth: ClientAuthMethod = {
  code: Method.NO_AUTH,
  name: "none",
  negotiate: async () => ({}),
};

/** Username/password (RFC 1929, METHOD 0x02). */
export function userPassAuth(credentials: Credentials): ClientAuthMethod {
  return {
    code: Method.USERPASS,
    name: "userpass",
    async negotiate(stream, reader) {
      stream.write(encodeUserPassRequest(credentials));
      const reply = await reader.read(parseUserPassReply);
      if (!reply.ok) {
        throw new Error(
          `the proxy rejected user "${credentials.username}" (status ${reply.status}): check the user name and password`,
        );
      }
      return {};
    },
  };
}
