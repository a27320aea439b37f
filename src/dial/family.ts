import type { ResolvePreference } from "../config/routes-schema.js";

export type { ResolvePreference };

export interface Resolved {
  address: string;
  family: number;
}

/**
 * The order addresses are tried in (RFC 8305 §4): families interleaved, starting with the
 * preferred one, or the resolver's first when the preference is `system`. `*-only` drops the other
 * family. Pure, so the gateway's choices are tested without a resolver.
 */
export function orderAddresses(list: Resolved[], preference: ResolvePreference = "system"): Resolved[] {
  if (preference === "ipv4-only") return list.filter((a) => a.family === 4);
  if (preference === "ipv6-only") return list.filter((a) => a.family === 6);
  if (list.length < 2) return list;
  const first = preference === "ipv6-first" ? 6 : preference === "ipv4-first" ? 4 : list[0]!.family;
  const preferred = list.filter((a) => a.family === first);
  const other = list.filter((a) => a.family !== first);
  const out: Resolved[] = [];
  for (let i = 0; i < Math.max(preferred.length, other.length); i++) {
    if (i < preferred.length) out.push(preferred[i]!);
    if (i < other.length) out.push(other[i]!);
  }
  return out;
}
