import { readFile } from "node:fs/promises";
import net from "node:net";
import tls from "node:tls";
import { StreamReader } from "../io/reader.js";
import type { SocksError } from "./errors.js";
import { fail, type HopIo } from "./handshake.js";
import type { ProxyHop } from "./proxy.js";
import type { HopTls } from "./tls-options.js";

/**
 * Starts TLS over the stream that reaches `hop` (the socket to the first proxy, or the tunnel the
 * hops before it opened) and resolves once the proxy's certificate is verified. A failure is a
 * SocksError of stage "tls" that names the certificate problem.
 */
export async function startHopTls(io: HopIo, hop: ProxyHop & { tls: HopTls }, index: number): Promise<HopIo> {
  const t = hop.tls;
  const read = async (what: "ca" | "cert" | "key"): Promise<Buffer | undefined> => {
    const file = t[what];
    if (file === undefined) return undefined;
    try {
      return await readFile(file);
    } catch (err) {
      throw fail(hop, index, "tls", `cannot read ${what}=${file}: ${(err as NodeJS.ErrnoException).code}`);
    }
  };
  const [ca, cert, key] = [await read("ca"), await read("cert"), await read("key")];
  if ((cert === undefined) !== (key === undefined))
    throw fail(hop, index, "tls", "a client certificate needs both cert=FILE and key=FILE");
  // Bytes the reader holds go back to the stream; a proxy says nothing before the ClientHello.
  io.reader.handBack();
  const servername = t.servername ?? (net.isIP(hop.host) ? undefined : hop.host);
  const secure = tls.connect({
    ...t.options,
    socket: io.stream,
    host: t.servername ?? hop.host,
    ...(servername !== undefined && { servername }),
    ...(ca && { ca }),
    ...(cert && key && { cert, key }),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      secure.once("error", onError);
      secure.once("secureConnect", () => {
        secure.off("error", onError);
        resolve();
      });
      // The stream below closing first (timeout, abort, the proxy hung up) ends the wait too.
      secure.once("close", () => reject(new Error("connection closed during the TLS handshake")));
    });
  } catch (err) {
    secure.destroy();
    throw fail(hop, index, "tls", `TLS handshake failed: ${explain(err as NodeJS.ErrnoException)}`, {
      cause: err,
    });
  }
  // TLS 1.3 finishes the client's handshake before the proxy has checked our certificate: its
  // refusal arrives as an alert on the first read, which `lateTlsFailure` turns into a "tls" error.
  secure.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code?.startsWith("ERR_SSL")) late.set(secure, err);
  });
  return { stream: secure, reader: new StreamReader(secure) };
}

const late = new WeakMap<object, NodeJS.ErrnoException>();

/** A TLS alert that ended the exchange with `hop` after its handshake, as a "tls" SocksError. */
export function lateTlsFailure(
  io: HopIo,
  hop: ProxyHop,
  index: number,
  cause: unknown,
): SocksError | undefined {
  const err = late.get(io.stream);
  if (!err) return undefined;
  return fail(hop, index, "tls", `TLS refused after the handshake: ${explain(err)}`, { cause });
}

/** What went wrong with the certificate, in words, and what to do about it. */
function explain(err: NodeJS.ErrnoException): string {
  const code = err.code ?? "";
  const untrusted = [
    "DEPTH_ZERO_SELF_SIGNED_CERT",
    "SELF_SIGNED_CERT_IN_CHAIN",
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    "UNABLE_TO_GET_ISSUER_CERT",
    "CERT_SIGNATURE_FAILURE",
  ];
  if (untrusted.includes(code))
    return `the proxy's certificate is not trusted: ${err.message} (${code}); give its CA with ca=FILE`;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID")
    return `the proxy's certificate does not name this host: ${err.message}; connect by a name it lists or set servername=NAME`;
  if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID")
    return `the proxy's certificate is out of its validity period: ${err.message} (${code})`;
  if (/CERTIFICATE_REQUIRED|PEER_DID_NOT_RETURN/.test(code))
    return `the proxy requires a client certificate (${code}); give cert=FILE and key=FILE`;
  if (/ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|DECRYPT_ERROR)/.test(code))
    return `the proxy refused our client certificate (${code})`;
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || code === "ERR_SSL_PACKET_LENGTH_TOO_LONG")
    return `the proxy does not speak TLS on this port (${code}); use a scheme without TLS`;
  const reason = /:([^:]+):[^:]*\.c:\d+:/.exec(err.message)?.[1];
  return `${reason ?? err.message}${code ? ` (${code})` : ""}`;
}
