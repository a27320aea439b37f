/** Whitespace or a comma, except the commas inside a URL's `protection=integrity,confidentiality`. */
const CHAIN_SEPARATOR = /\s+|,(?!(?:none|integrity|confidentiality)(?:[,&#\s]|$))/;

/**
 * The proxy chain named by the environment: `FERRY_PROXY` (one URL, or several separated by
 * commas or spaces for a chain), else `ALL_PROXY` / `all_proxy` when it is a socks URL.
 * Returns undefined when neither is set.
 */
export function proxyFromEnv(env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  const ferry = env.FERRY_PROXY?.trim();
  if (ferry) return ferry.split(CHAIN_SEPARATOR).filter(Boolean);
  const all = (env.ALL_PROXY ?? env.all_proxy)?.trim();
  if (all && /^socks(4a?|5h?)?:\/\//i.test(all)) return [all];
  return undefined;
}
