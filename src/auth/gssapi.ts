import { accessSync, constants } from "node:fs";
import { StreamReader } from "../io/reader.js";
import { ProtocolError } from "../protocol/errors.js";
import {
  decodeProtectionLevel,
  encodeGssAbort,
  encodeGssMessage,
  encodeProtectionLevel,
  expectGssMessage,
  type ProtectionName,
} from "../protocol/gssapi.js";
import { Method } from "../protocol/socks5.js";
import { type GssContext, loadGssapi } from "./gssapi-native.js";
import { GssEncapsulation, gssProtector } from "./gssapi-stream.js";
import { AuthError, type AuthMethod } from "./method.js";

export interface GssapiServerOptions {
  /** The keytab holding the service's keys. */
  keytab: string;
  /** The service principal ("rcmd/proxy.example.com"); without a realm, the keytab's realm. Omitted: any key in the keytab. */
  principal?: string;
  /** Levels accepted, most preferred first. */
  protection: ProtectionName[];
}

/** Kerberos needs two messages each way; a few more rounds are allowed for other mechanisms. */
const MAX_ROUNDS = 8;

/** A principal matches when equal, or equal before the realm when the configured one has none. */
function principalMatches(configured: string, actual: string): boolean {
  if (configured.includes("@")) return configured === actual;
  const at = actual.lastIndexOf("@");
  return (at < 0 ? actual : actual.slice(0, at)) === configured;
}

/**
 * GSS-API authentication (RFC 1961): context establishment, the protection-level
 * sub-negotiation, then per-message encapsulation. Throws at construction (server start) when the
 * add-on is not built or the keytab cannot be read, with a message that says what to do.
 */
export function gssapiAuth(options: GssapiServerOptions): AuthMethod {
  const api = loadGssapi();
  try {
    accessSync(options.keytab, constants.R_OK);
  } catch (err) {
    throw new Error(
      `gssapi.keytab ${options.keytab} cannot be read (${(err as NodeJS.ErrnoException).code}); export the service key with kadmin: ktadd -k ${options.keytab} ${options.principal ?? "rcmd/HOST"}`,
    );
  }
  const principal = options.principal;
  // With a full principal, the credential holds exactly that key; without a realm, any key is
  // acquired and the ticket's service is checked after the context is established.
  const credential = new api.Credential(options.keytab, principal?.includes("@") ? principal : undefined);
  if (options.protection.length === 0) throw new Error("gssapi.protection must list at least one level");

  return {
    name: "gssapi",
    code: Method.GSSAPI,
    async negotiate({ reader, stream }) {
      const ctx: GssContext = new api.Context(credential);
      const refuse = (message: string, user?: string): AuthError => {
        stream.write(encodeGssAbort());
        ctx.dispose();
        return new AuthError(`GSSAPI: ${message}`, user);
      };
      let user: string | undefined;
      try {
        for (let round = 0; !ctx.complete; round++) {
          if (round === MAX_ROUNDS) throw refuse(`context not established after ${MAX_ROUNDS} rounds`);
          const token = await reader.read(expectGssMessage("auth"));
          // Kerberos answers an empty token with "No credentials were supplied", which reads as
          // a fault of the server's keytab; the fault is the client's.
          if (token.length === 0) throw refuse("the client sent an empty authentication token");
          let reply: Buffer;
          try {
            reply = await ctx.step(token);
          } catch (err) {
            throw refuse((err as Error).message);
          }
          if (reply.length > 0) stream.write(encodeGssMessage({ type: "auth", token: reply }));
        }
        user = ctx.peerName;
        const service = ctx.localName ?? "";
        if (principal && !principalMatches(principal, service)) {
          throw refuse(`the client asked for service ${service}, not ${principal}`, user);
        }
        const wrapped = await reader.read(expectGssMessage("protection"));
        let requested: ProtectionName;
        try {
          requested = decodeProtectionLevel(ctx.unwrap(wrapped).data);
        } catch (err) {
          throw refuse(`protection level: ${(err as Error).message}`, user);
        }
        // The client's level when this server accepts it: Dante's client, told another level,
        // carries on at its own and the session breaks. Otherwise the first the context allows.
        const usable = (level: ProtectionName): boolean => level === "none" || ctx.flags[level];
        const chosen =
          options.protection.includes(requested) && usable(requested)
            ? requested
            : options.protection.find(usable);
        if (!chosen) {
          throw refuse(
            `client ${user} asked for ${requested}; the context offers none of ${options.protection.join(", ")}`,
            user,
          );
        }
        stream.write(
          encodeGssMessage({ type: "protection", token: ctx.wrap(encodeProtectionLevel(chosen), false) }),
        );
        if (chosen === "none") {
          ctx.dispose();
          return { user, protection: chosen };
        }
        const encapsulated = new GssEncapsulation(stream, gssProtector(ctx, chosen), reader.release());
        // Like the socket in runSession: errors surface through the reader and the relay, and
        // between them (while dialling) a reset must not crash the process.
        encapsulated.on("error", () => {});
        return {
          user,
          protection: chosen,
          encapsulation: { stream: encapsulated, reader: new StreamReader(encapsulated) },
        };
      } catch (err) {
        if (err instanceof AuthError) throw err;
        ctx.dispose();
        // Parser errors carry reply 0xFF: the handshake answers with the abort message.
        if (err instanceof ProtocolError) throw err;
        throw new AuthError(`GSSAPI: ${(err as Error).message}`, user);
      }
    },
  };
}
