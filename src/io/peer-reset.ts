import type { Duplex } from "node:stream";

/**
 * Whether a socket that just emitted 'end' was in fact reset by its peer. libuv (1.46, Node 20)
 * reports a reset that arrives behind unread data as an end of stream (the POLLHUP partial-read
 * shortcut, libuv#4992, fixed by libuv#4997), so a target dying mid-download would look like a
 * clean FIN. A reset socket has no peer any more: getpeername fails with ENOTCONN, while after a
 * FIN it still answers (CLOSE_WAIT). Only asked while our side has not ended: once our FIN has
 * gone, a peer's FIN also leaves the socket without a peer (TIME_WAIT). Streams that are not
 * sockets (GSSAPI encapsulation) have no handle and are taken at their word.
 */
export function resetBehindEnd(stream: Duplex): boolean {
  if (stream.writableEnded) return false;
  const handle = (stream as Duplex & { _handle?: { getpeername?: (out: object) => number } })._handle;
  if (typeof handle?.getpeername !== "function") return false;
  return handle.getpeername({}) !== 0;
}
