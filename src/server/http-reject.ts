import type { Socket } from "node:net";
import { formatAddress } from "../protocol/address.js";
import { closeAfterReply } from "./replier.js";

/** Tells an HTTP client (a browser or curl with an http:// proxy) it reached a SOCKS port. */
export function rejectHttp(socket: Socket): void {
  const here = formatAddress({ host: socket.localAddress ?? "127.0.0.1", port: socket.localPort ?? 1080 });
  const body =
    `This is Ferry, a SOCKS proxy, not an HTTP proxy. Configure your client for SOCKS: ` +
    `curl --proxy socks5h://${here} URL, or ALL_PROXY=socks5h://${here}.\n`;
  const response =
    "HTTP/1.1 400 Bad Request\r\n" +
    "Content-Type: text/plain; charset=utf-8\r\n" +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    "Connection: close\r\n\r\n" +
    body;
  closeAfterReply(socket, Buffer.from(response));
}
