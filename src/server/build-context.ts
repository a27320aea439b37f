import { readFile } from "node:fs/promises";
import { gssapiAuth } from "../auth/gssapi.js";
import { readHtpasswd } from "../auth/htpasswd.js";
import { LdapDirectory } from "../auth/ldap.js";
import type { AuthMethod } from "../auth/method.js";
import { noAuth } from "../auth/none.js";
import { userPassAuth } from "../auth/userpass.js";
import { UserDatabase } from "../auth/users.js";
import { ConfigError, effectiveAuth } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { buildOutbound } from "../dial/build-outbound.js";
import { buildPolicy } from "../policy/rule-policy.js";
import { withSelfGuard } from "../policy/self.js";
import { sharedQuotas, sharedStore } from "../shared/state-store.js";
import type { ServerContext } from "./context.js";
import { ServerState } from "./state.js";
import { loadListenerTls } from "./tls-listener.js";

/**
 * Reads what the configuration points at (the users file) and assembles a session context.
 * Without `state`, a new one: in this process, or in Redis when the configuration says so.
 */
export async function buildContext(config: Config, given?: ServerState): Promise<ServerContext> {
  const state = given ?? (await stateFor(config));
  const fileUsers = typeof config.users === "string" ? await readHtpasswd(config.users) : [];
  const directory = typeof config.users === "object" ? await ldapDirectory(config.users.ldap) : undefined;
  const users = new UserDatabase(fileUsers, config.inlineUsers, undefined, directory);
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
    outbound: buildOutbound(config, policy, {
      resolver: state.resolver,
      onHop: (result) => state.emit("upstream", result),
    }),
    state,
    tls,
  };
}

/** The directory `users: { ldap }` names, with the service account's password read from its file. */
async function ldapDirectory(
  ldap: Exclude<Config["users"], string | undefined>["ldap"],
): Promise<LdapDirectory> {
  let bindPassword: string;
  try {
    bindPassword = (await readFile(ldap.bindPasswordFile, "utf8")).replace(/\r?\n$/, "");
  } catch (err) {
    throw new ConfigError(
      `users.ldap.bindPasswordFile: cannot read ${ldap.bindPasswordFile}: ${(err as Error).message}`,
    );
  }
  return new LdapDirectory({ ...ldap, bindPassword });
}

async function stateFor(config: Config): Promise<ServerState> {
  const shared = await sharedStore(config);
  return new ServerState(shared, 1, sharedQuotas(shared, 1));
}
