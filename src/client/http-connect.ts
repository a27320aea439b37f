import { addressOf, formatAddress, type SocksAddress } from "../protocol/address.js";
import { encodeHttpConnect, parseHttpConnectResponse, replyForHttpStatus } from "../protocol/http-connect.js";
import type { CommandName } from "../protocol/socks5.js";
import { at, fail, type HopIo } from "./handshake.js";
import type { ProxyHop } from "./proxy.js";

/**
 * An HTTP proxy as a hop (`http://`): CONNECT with Basic credentials when the hop has a user.
 * It tunnels TCP only; the reply carries no bound address, so 0.0.0.0:0 stands for "unknown".
 * A refusal becomes a SocksError with the SOCKS5 reply closest to the HTTP status.
 */
export async function httpConnectHop(
  io: HopIo,
  hop: ProxyHop,
  index: number,
  command: CommandName,
  target: SocksAddress,
): Promise<{ io: HopIo; bound: SocksAddress }> {
  if (command !== "connect") {
    throw fail(
      hop,
      index,
      "request",
      `an HTTP proxy tunnels only CONNECT, not ${command}; use a SOCKS5 proxy`,
    );
  }
  const credentials =
    hop.username === undefined ? undefined : { user: hop.username, password: hop.password ?? "" };
  io.stream.write(encodeHttpConnect(target, credentials));
  const response = await at(hop, index, "request", () => io.reader.read(parseHttpConnectResponse));
  if (response.status < 200 || response.status > 299) {
    // 407 is the standard answer to missing or wrong proxy credentials; tinyproxy sends 401.
    const auth = response.status === 407 || response.status === 401;
    const stage = auth ? "auth" : "request";
    const hint = auth
      ? credentials
        ? "; check the user and password"
        : "; it needs a user and password"
      : "";
    throw fail(
      hop,
      index,
      stage,
      `refused CONNECT to ${formatAddress(target)}: HTTP ${response.status} ${response.reason}${hint}`,
      { reply: replyForHttpStatus(response.status) },
    );
  }
  return { io, bound: addressOf("0.0.0.0", 0) };
}
