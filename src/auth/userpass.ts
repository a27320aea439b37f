import { Method } from "../protocol/socks5.js";
import { encodeUserPassReply, parseUserPassRequest } from "../protocol/userpass.js";
import type { LoginGuard } from "./login-guard.js";
import { AuthError, type AuthMethod } from "./method.js";
import type { UserDatabase } from "./users.js";

/** RFC 1929 username/password, checked against the user database; failures slowed by `guard`. */
export function userPassAuth(users: () => UserDatabase, guard?: LoginGuard): AuthMethod {
  return {
    name: "userpass",
    code: Method.USERPASS,
    async negotiate({ reader, stream, clientAddress }) {
      const { username, password } = await reader.read(parseUserPassRequest);
      await guard?.before(clientAddress);
      const db = users();
      const ok = await db.verify(username, password);
      if (!ok) {
        await guard?.failed(clientAddress, username, "userpass");
        stream.write(encodeUserPassReply(false));
        const why = db.has(username) ? "wrong password" : "unknown user";
        throw new AuthError(`authentication failed for user "${username}": ${why}`, username);
      }
      guard?.succeeded(clientAddress, username, "userpass");
      stream.write(encodeUserPassReply(true));
      return { user: username };
    },
  };
}
