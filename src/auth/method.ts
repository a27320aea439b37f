import type { Duplex } from "node:stream";
import type { StreamReader } from "../io/reader.js";
import type { ProtectionName } from "../protocol/gssapi.js";

export interface AuthContext {
  /** Reads the client's messages (already past the greeting). */
  reader: StreamReader;
  /** Writes to the client. */
  stream: Duplex;
  clientAddress: string;
}

export interface AuthOutcome {
  /** The authenticated identity, if the method has one. */
  user?: string;
  /** The user's groups from a directory (LDAP), besides those of `groups:` in the configuration. */
  groups?: string[];
  /** GSSAPI: the protection level agreed for the rest of the session (RFC 1961), for the audit. */
  protection?: ProtectionName;
  /**
   * A stream that wraps the connection after the handshake (GSSAPI integrity/confidentiality).
   * Request, reply and relay all run over it unchanged.
   */
  encapsulation?: { stream: Duplex; reader: StreamReader };
}

/** A refused authentication; the method has already told the client. */
export class AuthError extends Error {
  override name = "AuthError";
  constructor(
    message: string,
    readonly user?: string,
  ) {
    super(message);
  }
}

/** An authentication method: one SOCKS5 METHOD code and the sub-negotiation that follows it. */
export interface AuthMethod {
  readonly name: string;
  readonly code: number;
  negotiate(ctx: AuthContext): Promise<AuthOutcome>;
}
