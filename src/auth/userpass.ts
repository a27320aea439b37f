import type { Duplex } from "node:stream";
import { Method } from "../protocol/socks5.js";
import { encodeUserPassReply, parseUserPassRequest } from "../protocol/userpass.js";
import type { LoginOutcome, LoginThrottle } from "./login-guard.js";
import { AuthError, type AuthMethod } from "./method.js";
import type { UserDatabase } from "./users.js";

/** RFC 1929 username/password, checked against the user database; attempts lined up and slowed by `guard`. */
export function userPassAuth(users: () => UserDatabase, guard?: LoginThrottle): AuthMethod {
  return {
    name: "userpass",
    code: Method.USERPASS,
    async negotiate({ reader, stream, clientAddress }) {
      const { username, password } = await reader.read(parseUserPassRequest);
      // The database current when the attempt's turn comes, as a reload may land while it waits.
      let db = users();
      let error: Error | undefined;
      const check = async () => {
        db = users();
        try {
          return await db.verify(username, password);
        } catch (err) {
          // Could not be checked (too many checks pending, a worker died): a failure, held as one.
          error = err as Error;
          return false;
        }
      };
      let outcome: LoginOutcome;
      if (guard) {
        // A client that leaves while its attempt waits in line gives up its place.
        const gone = watchHangUp(stream);
        try {
          outcome = await guard.attempt(clientAddress, username, "userpass", check, gone.signal);
        } catch (err) {
          throw gone.signal.aborted ? gone.signal.reason : err;
        } finally {
          gone.stop();
        }
      } else {
        outcome = { ok: await check() };
      }
      if (!outcome.ok) {
        stream.write(encodeUserPassReply(false));
        let why = outcome.refused ?? (db.has(username) ? "wrong password" : "unknown user");
        if (error) why = `password check failed: ${error.message}`;
        throw new AuthError(`authentication failed for user "${username}": ${why}`, username);
      }
      stream.write(encodeUserPassReply(true));
      const groups = db.groupsOf(username);
      return groups ? { user: username, groups } : { user: username };
    },
  };
}

/**
 * A signal that fires when the client closes or half-closes the connection. Server sockets allow
 * half-open connections, and a paused stream reports its end only when read, so on each
 * `readable` with nothing buffered a zero-byte read lets the end through; buffered bytes (a
 * request sent ahead) are left for the handshake.
 */
function watchHangUp(stream: Duplex): { signal: AbortSignal; stop(): void } {
  const gone = new AbortController();
  const onGone = () => gone.abort(new Error("the client hung up while its login waited its turn"));
  const onReadable = () => {
    if (stream.readableLength === 0) stream.read(0);
  };
  if (stream.destroyed || stream.readableEnded) onGone();
  stream.on("end", onGone);
  stream.on("close", onGone);
  stream.on("readable", onReadable);
  onReadable();
  return {
    signal: gone.signal,
    stop: () => {
      stream.off("end", onGone);
      stream.off("close", onGone);
      stream.off("readable", onReadable);
    },
  };
}
