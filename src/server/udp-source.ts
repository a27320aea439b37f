import { familyOf } from "../dial/announce.js";
import { isLocalAddress } from "../dial/egress.js";
import { normalizeIp } from "../policy/addresses.js";
import { isUnspecified, type SocksAddress } from "../protocol/address.js";

/**
 * Who may send on a UDP association, from the control connection's peer and the request's
 * DST.ADDR (docs/bind-udp.md, "Which source is accepted").
 */
export interface ClientSource {
  /** The family the relay socket opens in: the one the client will send from. */
  family: 4 | 6;
  /** The one source IP accepted; undefined until the first datagram from this host pins it. */
  ip: string | undefined;
  /** True when `family` is not the control connection's: the client said it sends from the other one. */
  crossFamily: boolean;
}

/**
 * The control connection's IP, as before, unless the request declares the other family and the
 * client is on this host: then the declared address when it is one of this host's too (any of
 * this host's addresses for `::`, pinned by the first datagram). A remote client's address of the
 * other family cannot be checked, so a declaration from afar is ignored: its datagrams must come
 * from the control connection's IP. All zeros of IPv4 is the usual "not known yet" and declares
 * nothing; `::` can only come from a client whose socket is IPv6.
 */
export function clientSource(
  declared: SocksAddress,
  peer: string,
  isLocal: (ip: string) => boolean = isLocalAddress,
): ClientSource {
  const same: ClientSource = { family: familyOf(peer), ip: peer, crossFamily: false };
  if (declared.type === "domain" || (declared.type === "ipv4" && isUnspecified(declared))) return same;
  const host = normalizeIp(declared.host);
  const family = familyOf(host);
  if (family === same.family || !isLocal(peer)) return same;
  if (isUnspecified(declared)) return { family, ip: undefined, crossFamily: true };
  return isLocal(host) ? { family, ip: host, crossFamily: true } : same;
}

/** Whether a datagram from `ip` is the client's (its port is checked apart). */
export function fromClient(
  source: ClientSource,
  ip: string,
  isLocal: (ip: string) => boolean = isLocalAddress,
): boolean {
  if (source.ip !== undefined) return ip === source.ip;
  return familyOf(ip) === source.family && isLocal(ip);
}
