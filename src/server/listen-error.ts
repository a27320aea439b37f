import { formatAddress } from "../protocol/address.js";

/** Turns a listen failure into one line that says what to do. */
export function describeListenError(err: NodeJS.ErrnoException, host: string, port: number): string {
  const where = formatAddress({ host, port });
  switch (err.code) {
    case "EADDRINUSE":
      return `cannot listen on ${where}: address already in use. Another program (maybe another ferry) holds this port: stop it, or pick a free port with --listen ${formatAddress({ host, port: port === 1080 ? 1081 : port + 1 })}`;
    case "EACCES":
      return `cannot listen on ${where}: permission denied. Ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port above 1023`;
    case "EADDRNOTAVAIL":
      return `cannot listen on ${where}: this machine has no such address. Use one of its own addresses, 127.0.0.1, or 0.0.0.0 for all`;
    case "EAFNOSUPPORT":
      return `cannot listen on ${where}: this machine does not support that address family`;
    default:
      return `cannot listen on ${where}: ${err.message}`;
  }
}
