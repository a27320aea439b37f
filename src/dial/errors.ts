import { Reply } from "../protocol/errors.js";

/** A failed dial, with the SOCKS5 reply code the client should receive. */
export class DialError extends Error {
  override name = "DialError";
  constructor(
    message: string,
    readonly reply: number,
    readonly code?: string,
  ) {
    super(message);
  }
}

const byCode: Record<string, number> = {
  ENETUNREACH: Reply.NETWORK_UNREACHABLE,
  EHOSTUNREACH: Reply.HOST_UNREACHABLE,
  EHOSTDOWN: Reply.HOST_UNREACHABLE,
  ENOTFOUND: Reply.HOST_UNREACHABLE,
  EAI_AGAIN: Reply.HOST_UNREACHABLE,
  EAI_FAIL: Reply.HOST_UNREACHABLE,
  EAI_NONAME: Reply.HOST_UNREACHABLE,
  EAI_NODATA: Reply.HOST_UNREACHABLE,
  ENODATA: Reply.HOST_UNREACHABLE,
  ECONNREFUSED: Reply.CONNECTION_REFUSED,
  ETIMEDOUT: Reply.TTL_EXPIRED,
};

/** The system error code behind an error, looking inside the AggregateError of Happy Eyeballs. */
export function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; errors?: unknown[] };
  if (typeof e?.code === "string") return e.code;
  if (Array.isArray(e?.errors)) {
    // Prefer the most telling cause: a refusal beats an unreachable family.
    const codes = e.errors.map(errorCode).filter((c): c is string => !!c);
    return codes.find((c) => c === "ECONNREFUSED") ?? codes[0];
  }
  return undefined;
}

/** Maps any error from dialling to the reply code of DESIGN.md's table. */
export function replyForError(err: unknown): number {
  if (err instanceof DialError) return err.reply;
  const code = errorCode(err);
  return (code ? byCode[code] : undefined) ?? Reply.GENERAL_FAILURE;
}
