import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import type net from "node:net";
import tls from "node:tls";
import type { CertUserField, ListenEntry } from "../config/listen-schema.js";
import { listenKey } from "../config/listen-schema.js";
import type { SessionRecord } from "./context.js";

/** What a TLS listener needs per connection, built once per configuration (start and reload). */
export interface ListenerTls {
  secureContext: tls.SecureContext;
  /** Client certificates are asked for (clientCa set). */
  requestCert: boolean;
  /** A client without a valid certificate fails the handshake. */
  requireClientCert: boolean;
  userField: CertUserField;
  /** SHA-256 fingerprint of the served certificate, for the reload message. */
  fingerprint: string;
}

/** The method recorded for a session whose user is the subject of a verified client certificate. */
export const TLS_CERT_METHOD = "tls-cert";

/**
 * Reads the certificate files of every TLS listener and builds their secure contexts. Throws one
 * message naming the listener and the file for anything unusable, so a reload with a bad new
 * certificate is refused and the listeners keep the one they have.
 */
export async function loadListenerTls(listen: readonly ListenEntry[]): Promise<Map<string, ListenerTls>> {
  const out = new Map<string, ListenerTls>();
  for (const l of listen) {
    if (!l.tls) continue;
    const where = `listen ${listenKey(l.host, l.port)}`;
    const read = async (key: "cert" | "key" | "clientCa", file: string): Promise<Buffer> => {
      try {
        return await readFile(file);
      } catch (err) {
        throw new Error(`${where}: tls.${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
      }
    };
    const cert = await read("cert", l.tls.cert);
    const key = await read("key", l.tls.key);
    const ca = l.tls.clientCa ? await read("clientCa", l.tls.clientCa) : undefined;
    let fingerprint: string;
    let secureContext: tls.SecureContext;
    try {
      fingerprint = new X509Certificate(cert).fingerprint256;
    } catch (err) {
      throw new Error(
        `${where}: tls.cert: ${l.tls.cert} is not a PEM certificate (${(err as Error).message})`,
      );
    }
    try {
      secureContext = tls.createSecureContext({ cert, key, ca, minVersion: l.tls.minVersion });
    } catch (err) {
      throw new Error(
        `${where}: tls: cannot use ${l.tls.cert} with ${l.tls.key}${ca ? ` and ${l.tls.clientCa}` : ""}: ${(err as Error).message}`,
      );
    }
    out.set(listenKey(l.host, l.port), {
      secureContext,
      requestCert: ca !== undefined,
      requireClientCert: l.tls.requireClientCert,
      userField: l.tls.userField,
      fingerprint,
    });
  }
  return out;
}

/**
 * Wraps an accepted connection in TLS (after accept rather than with tls.createServer, so that
 * whatever comes in plain before TLS can be read first). The session reads the decrypted stream
 * as it would a plain socket; the handshake runs on its first read, under its handshake timer. A
 * failed handshake or a refused client certificate is written into the record before the session
 * sees the connection close, so the record says why. A verified certificate sets the session's
 * user (its subject's `userField`) and method `tls-cert`.
 */
export function acceptTls(socket: net.Socket, lt: ListenerTls, record: SessionRecord): tls.TLSSocket {
  const secure = new tls.TLSSocket(socket, {
    isServer: true,
    secureContext: lt.secureContext,
    requestCert: lt.requestCert,
    // OpenSSL then refuses a client that sends no certificate; a wrong one is checked below.
    rejectUnauthorized: lt.requireClientCert,
  });
  let established = false;
  secure.once("secure", () => {
    established = true;
    record.tls = secure.getProtocol() ?? "TLS";
    if (!lt.requestCert) return;
    const refusal = clientCertificate(secure, lt, record);
    if (refusal) {
      record.reason = refusal;
      secure.destroy();
    }
  });
  secure.on("error", (err: NodeJS.ErrnoException) => {
    if (!established && !record.reason) record.reason = `TLS handshake failed: ${describeTlsError(err)}`;
  });
  // Clients check the server's certificate at the end of the handshake and leave without an
  // alert when they do not trust it: a close before any byte of a request is that, mostly.
  const closedEarly = (): void => {
    if (record.reason || record.protocol) return;
    record.reason = established
      ? "TLS handshake failed: the client closed the connection right after it, before any request (it may not trust this server's certificate)"
      : socket.bytesRead === 0
        ? "closed before the TLS handshake began"
        : "TLS handshake failed: the client closed the connection during the handshake (it may not trust this server's certificate)";
  };
  // 'end' comes before the session's reader wakes up to the close; 'close' when there is no end.
  secure.once("end", closedEarly);
  secure.once("close", closedEarly);
  return secure;
}

/**
 * Checks the client's certificate, as tls.Server would (a bare TLSSocket does not): none is fine
 * unless required; one that does not verify against clientCa is refused. Returns the refusal.
 */
function clientCertificate(
  secure: tls.TLSSocket,
  lt: ListenerTls,
  record: SessionRecord,
): string | undefined {
  const peer = secure.getPeerCertificate();
  if (!peer || Object.keys(peer).length === 0) {
    return lt.requireClientCert ? "TLS: no client certificate (tls.requireClientCert)" : undefined;
  }
  const handle = (secure as unknown as { _handle?: { verifyError?: () => Error | null } })._handle;
  // Fails closed should Node's internals change.
  if (typeof handle?.verifyError !== "function") return "TLS: cannot verify the client certificate";
  const error = handle.verifyError() as (Error & { code?: string }) | null;
  const subject = peer.subject ? formatSubject(peer.subject) : "(no subject)";
  if (error) return `TLS: client certificate ${subject} refused: ${error.code ?? error.message}`;
  const user = peer.subject?.[lt.userField];
  const name = Array.isArray(user) ? user[0] : user;
  if (!name) return `TLS: client certificate ${subject} has no ${lt.userField} to name the user`;
  record.user = name;
  record.method = TLS_CERT_METHOD;
  return undefined;
}

function formatSubject(subject: tls.Certificate): string {
  return Object.entries(subject)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("+") : v}`)
    .join(",");
}

/** OpenSSL's messages carry a stack of source paths; the reason is what a reader needs. */
export function describeTlsError(err: NodeJS.ErrnoException): string {
  const reason = /:([^:]+):[^:]*\.c:\d+:/.exec(err.message)?.[1];
  if (reason) return `${reason}${err.code ? ` (${err.code})` : ""}`;
  return err.code && !err.message.includes(err.code) ? `${err.message} (${err.code})` : err.message;
}
