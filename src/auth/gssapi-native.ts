import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** An acceptor credential: the service's keys, read from a keytab. */
export interface GssCredential {
  readonly __credential: never;
}

/**
 * One GSS-API (Kerberos) security context, as the add-on in native/gssapi exposes it. Calls that
 * may take long (establishment, which can ask the KDC; stream wrap/unwrap) run in libuv's thread
 * pool and return promises; the context's GSS calls are serialised inside the add-on.
 */
export interface GssContext {
  /** Feeds the peer's token (none for the initiator's first call); resolves with the token to send (may be empty). */
  step(token?: Buffer): Promise<Buffer>;
  /** step() on the calling thread, blocking while the KDC answers: for tests and token factories only. */
  stepSync(token?: Buffer): Buffer;
  readonly complete: boolean;
  /** Client principal (acceptor side) or service principal (initiator side), once complete. */
  readonly peerName: string | undefined;
  readonly localName: string | undefined;
  readonly flags: {
    mutual: boolean;
    integrity: boolean;
    confidentiality: boolean;
    replay: boolean;
    sequence: boolean;
  };
  /** One token, on the calling thread: for small messages (the protection level, datagrams). */
  wrap(data: Buffer, confidential: boolean): Buffer;
  /** `inOrder` false (datagrams) tolerates loss and reordering but still refuses replays. */
  unwrap(token: Buffer, inOrder?: boolean): { data: Buffer; confidential: boolean };
  /**
   * Cuts `data` (Buffers taken as one run of bytes) into pieces of at most `maxChunk` bytes and
   * writes piece i as an RFC 1961 data message (header and token) into outs[i], sealing in place;
   * resolves with each message's length. No Buffer may change until the promise settles.
   * `inline`: on the calling thread, for a small batch (OpenSSL sealing only; else the pool).
   */
  wrapFrames(
    data: Buffer | Buffer[],
    outs: Buffer[],
    maxChunk: number,
    confidential: boolean,
    inline?: boolean,
  ): Promise<number[]>;
  /**
   * Unwraps in place the whole RFC 1961 data messages that `run` (Buffers read as one run of
   * bytes) holds back to back, in order, refusing any token whose confidentiality differs from
   * `confidential`; resolves with [index, offset, length, ...]: the plaintext, in pieces inside
   * run[index] (a message split across Buffers comes back in the same places, in two pieces).
   * `inline` as for wrapFrames.
   */
  unwrapFrames(run: Buffer | Buffer[], confidential: boolean, inline?: boolean): Promise<number[]>;
  /** The largest input whose wrapped token fits in `maxToken` bytes. */
  wrapSizeLimit(maxToken: number, confidential: boolean): number;
  /** Who seals this context's tokens once established: see GssContextOptions. */
  readonly sealing: "openssl" | "gss_wrap";
  /** Releases the context now, or when the last running call ends. */
  dispose(): void;
}

export interface GssApi {
  /** `principal` may omit the realm (the default realm is used); omitted, any key in the keytab is accepted. */
  Credential: new (
    keytab: string,
    principal?: string,
  ) => GssCredential;
  /** Initiator: `target` is "service@host" or "service/host[@REALM]"; `ccache` overrides KRB5CCNAME. */
  Context: new (
    target: string | GssCredential,
    ccache?: string | GssContextOptions,
    options?: GssContextOptions,
  ) => GssContext;
}

export interface GssContextOptions {
  /**
   * Who seals and opens per-message tokens. "auto" (the default): Ferry's own RFC 4121 code with
   * OpenSSL when the session key is an AES enctype, else gss_wrap/gss_unwrap. "gss_wrap": always
   * the Kerberos library's own (also FERRY_GSSAPI_SEALING=gss_wrap).
   */
  sealing?: "auto" | "gss_wrap";
}

export const GSSAPI_NOT_BUILT =
  "GSSAPI support is not built: apt-get install libkrb5-dev g++ make python3, then `npm rebuild ferry` (in a ferry checkout: npm run build:gssapi)";

/** The add-on is not built (or cannot load); the message says how to build it. */
export class GssapiUnavailableError extends Error {
  override name = "GssapiUnavailableError";
}

const addonPath = fileURLToPath(
  new URL("../../../native/gssapi/build/Release/ferry_gssapi.node", import.meta.url),
);
let loaded: GssApi | Error | undefined;

/** Loads the add-on once; throws GssapiUnavailableError with a one-line how-to when it is missing. */
export function loadGssapi(): GssApi {
  if (loaded === undefined) {
    try {
      if (!existsSync(addonPath)) throw new GssapiUnavailableError(GSSAPI_NOT_BUILT);
      loaded = createRequire(import.meta.url)(addonPath) as GssApi;
    } catch (err) {
      loaded =
        err instanceof GssapiUnavailableError
          ? err
          : new GssapiUnavailableError(
              `${GSSAPI_NOT_BUILT} (loading ${addonPath} failed: ${(err as Error).message})`,
            );
    }
  }
  if (loaded instanceof Error) throw loaded;
  return loaded;
}

export function gssapiAvailable(): boolean {
  try {
    loadGssapi();
    return true;
  } catch {
    return false;
  }
}
