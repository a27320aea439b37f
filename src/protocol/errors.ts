/** SOCKS5 reply codes (RFC 1928 §6). SOCKS4 maps every failure to 91. */
export const Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

export type ReplyCode = (typeof Reply)[keyof typeof Reply];

const replyNames: Record<number, string> = {
  0: "succeeded",
  1: "general SOCKS server failure",
  2: "connection not allowed by ruleset",
  3: "network unreachable",
  4: "host unreachable",
  5: "connection refused",
  6: "TTL expired",
  7: "command not supported",
  8: "address type not supported",
};

/** SOCKS4 reply codes (CD field of the reply). */
export const Socks4Reply = {
  GRANTED: 90,
  REJECTED: 91,
  NO_IDENTD: 92,
  IDENTD_MISMATCH: 93,
} as const;

const socks4Names: Record<number, string> = {
  90: "request granted",
  91: "request rejected or failed",
  92: "rejected: cannot connect to identd",
  93: "rejected: identd user mismatch",
};

export function replyName(code: number, version: 4 | 5 = 5): string {
  const name = version === 4 ? socks4Names[code] : replyNames[code];
  return name ?? `unassigned (0x${code.toString(16).padStart(2, "0")})`;
}

/**
 * A malformed or unacceptable message. `reply` is what the peer should be told before the
 * connection closes: a SOCKS5 REP code, a SOCKS4 CD code, or undefined when nothing can be said
 * (a wrong version byte before any reply format is agreed).
 */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(
    message: string,
    readonly reply?: number,
  ) {
    super(message);
  }
}
