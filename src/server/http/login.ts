import type { IncomingMessage } from "node:http";
import { Reply } from "../../protocol/errors.js";
import { HttpRequestError, parseBasicCredentials } from "../../protocol/http-proxy.js";
import type { ServerContext, SessionRecord } from "../context.js";
import { TLS_CERT_METHOD } from "../tls-listener.js";
import type { Answer } from "./answer.js";

/** Who a request comes from: a user checked like an RFC 1929 login, or nobody when `none` is offered. */
export interface HttpLogin {
  user?: string;
  method: "none" | "userpass" | typeof TLS_CERT_METHOD;
  /** Directory users: their groups, for rules (`groups:`). */
  groups?: string[];
}

/** The last login checked on a connection: the same header again is not checked again. */
export interface LoginMemo {
  header: string;
  user: string;
}

const CHALLENGE = { "Proxy-Authenticate": 'Basic realm="ferry", charset="UTF-8"' };

/**
 * `Proxy-Authorization: Basic` against the server's users, through the same login throttle as
 * SOCKS logins (src/auth/login-guard.ts), so guessing over HTTP is slowed exactly as over SOCKS.
 * Which logins are accepted follows the methods SOCKS5 clients are offered: `userpass` asks for
 * Basic, `none` lets a request without one through. Kerberos is offered to SOCKS5 only:
 * Negotiate over HTTP is not supported, so a server offering only gssapi refuses HTTP with 403.
 */
export async function httpLogin(
  req: IncomingMessage,
  ctx: ServerContext,
  record: SessionRecord,
  memo: { last?: LoginMemo },
  signal: AbortSignal,
): Promise<HttpLogin | Answer> {
  // A verified client certificate on a TLS listener already says who it is (docs/tls.md).
  if (record.method === TLS_CERT_METHOD && record.user !== undefined)
    return { user: record.user, method: TLS_CERT_METHOD };
  const offered = ctx.methods.map((m) => m.name);
  const basic = offered.includes("userpass");
  const open = offered.includes("none");
  if (!basic && !open) {
    return {
      status: 403,
      reply: Reply.NOT_ALLOWED,
      text: `this proxy accepts only ${offered.join(", ")} logins, which HTTP proxy clients cannot use here (Negotiate is not supported); use SOCKS5 (socks5h://) with Kerberos`,
    };
  }
  // An open proxy ignores credentials it has no use for (curl --proxy-user on an open proxy).
  if (!basic) return { method: "none" };
  const header = req.headers["proxy-authorization"];
  let credentials: ReturnType<typeof parseBasicCredentials>;
  try {
    credentials = parseBasicCredentials(header);
  } catch (err) {
    if (!(err instanceof HttpRequestError)) throw err;
    return { status: 407, reply: Reply.NOT_ALLOWED, text: err.message, headers: CHALLENGE };
  }
  if (!credentials) {
    if (open) return { method: "none" };
    return {
      status: 407,
      reply: Reply.NOT_ALLOWED,
      text: "this proxy requires a login: send Proxy-Authorization: Basic (curl --proxy-user NAME:PASSWORD)",
      headers: CHALLENGE,
    };
  }
  const { user, password } = credentials;
  record.method = "userpass";
  if (memo.last && memo.last.header === header && memo.last.user === user) return withGroups(ctx, user);
  let error: Error | undefined;
  const check = async (): Promise<boolean> => {
    try {
      return await ctx.users.verify(user, password);
    } catch (err) {
      // Could not be checked (too many pending, a worker died): a failure, held as one.
      error = err as Error;
      return false;
    }
  };
  const outcome = await ctx.state.logins.attempt(record.client, user, "userpass", check, signal);
  if (!outcome.ok) {
    record.user = user;
    let why = outcome.refused ?? (ctx.users.has(user) ? "wrong password" : "unknown user");
    if (error) why = `password check failed: ${error.message}`;
    return {
      status: 407,
      reply: Reply.NOT_ALLOWED,
      // The client is not told whether the name exists; the record is.
      text: `authentication failed for user "${user}"`,
      reason: `authentication failed for user "${user}": ${why}`,
      headers: CHALLENGE,
    };
  }
  memo.last = { header: header!, user };
  return withGroups(ctx, user);
}

function withGroups(ctx: ServerContext, user: string): HttpLogin {
  const groups = ctx.users.groupsOf(user);
  return groups ? { user, method: "userpass", groups } : { user, method: "userpass" };
}
