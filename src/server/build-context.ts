import { gssapiAuth } from "../auth/gssapi.js";
import { readHtpasswd } from "../auth/htpasswd.js";
import type { AuthMethod } from "../auth/method.js";
import { noAuth } from "../auth/none.js";
import { userPassAuth } from "../auth/userpass.js";
import { UserDatabase } from "../auth/users.js";
import { ConfigError, effectiveAuth } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { buildOutbound } from "../dial/build-outbound.js";
import { buildPolicy } from "../policy/rule-policy.js";
import { withSelfGuard } from "../policy/self.js";
import type { ServerContext } from "./context.js";
import { ServerState } from "./state.js";
import { loadListenerTls } from "./tls-listener.js";

/** Reads what the configuration points at (the users file) and assembles a session context. */
export async function buildContext(config: Config, state = new ServerState()): Promise<ServerContext> {
  const fileUsers = config.users ? await readHtpasswd(config.users) : [];
  const users = new UserDatabase(fileUsers, config.inlineUsers);
  const methods: AuthMethod[] = effectiveAuth(config).map((name) => {
    switch (name) {
      case "none":
        return noAuth;
      case "userpass":
        return userPassAuth(() => users, state.logins);
      case "gssapi":
        // effectiveAuth's check guarantees the gssapi section exists.
        try {
          return gssapiAuth(config.gssapi!);
        } catch (err) {
          // A missing add-on or keytab is a configuration problem: one line, no stack.
          throw new ConfigError((err as Error).message);
        }
      default:
        throw new Error(`unknown authentication method ${name}`);
    }
  });
  let tls: ServerContext["tls"];
  try {
    tls = await loadListenerTls(config.listen);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const policy = withSelfGuard(buildPolicy(config), () => state.endpoints);
  return {
    config,
    users,
    methods,
    policy,
    outbound: buildOutbound(config, policy, { resolver: state.resolver }),
    state,
    tls,
  };
}
