import { lookup } from "node:dns/promises";
import type net from "node:net";
import type { Duplex } from "node:stream";
import { normalizeIp } from "../policy/addresses.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress, isUnspecified, type SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import { controlLocalAddress, listenTcp, placement } from "./announce.js";
import type { ServerContext, SessionRecord } from "./context.js";
import type { Handshake } from "./handshake.js";
import { relay } from "./relay.js";
import { boundAddress } from "./replier.js";

type Wait = { peer: net.Socket } | { end: "timeout" | "client gone" };

/**
 * BIND (RFC 1928 §4, SOCKS4): listen, reply with where, accept one peer from the expected address,
 * reply with who, then relay as CONNECT does. The listener closes after that one accept, on the
 * timeout (after a failure reply) and when the client goes away.
 */
export async function bindCommand(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  control: net.Socket,
): Promise<void> {
  let expected: Set<string> | undefined;
  try {
    expected = await expectedPeers(hs.target);
  } catch (err) {
    record.reason = `cannot resolve the expected BIND peer ${hs.target.host}: ${(err as NodeJS.ErrnoException).code ?? err}`;
    hs.replier.failure(Reply.HOST_UNREACHABLE);
    return;
  }
  const { listenHost, announceHost } = placement(ctx.config, controlLocalAddress(control));
  let server: net.Server;
  try {
    server = await listenTcp(listenHost, ctx.config.relayPorts);
  } catch (err) {
    record.reason = `cannot open a BIND listener on ${listenHost}: ${(err as Error).message}`;
    hs.replier.failure(Reply.GENERAL_FAILURE);
    return;
  }
  const bound = boundAddress(announceHost, (server.address() as net.AddressInfo).port);
  record.bound = formatAddress(bound);
  hs.replier.success(bound);

  const outcome = await new Promise<Wait>((resolve) => {
    let settled = false;
    const finish = (w: Wait): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      hs.stream.off("end", gone);
      hs.stream.off("close", gone);
      hs.stream.off("error", gone);
      server.close();
      resolve(w);
    };
    const gone = (): void => finish({ end: "client gone" });
    const timer = setTimeout(() => finish({ end: "timeout" }), ctx.config.timeouts.bind);
    // A client that closes (or half-closes) while waiting has given up on the peer.
    hs.stream.on("end", gone);
    hs.stream.on("close", gone);
    hs.stream.on("error", gone);
    if (hs.reader.peerEnded || hs.stream.destroyed) gone();
    server.on("connection", (peer: net.Socket) => {
      peer.on("error", () => {});
      const ip = normalizeIp(peer.remoteAddress ?? "");
      const allowed =
        !settled && (!expected || expected.has(ip)) && ctx.policy.address(query, ip).verdict === "allow";
      if (!allowed) {
        // Not the peer the client named: turn it away and keep waiting for the right one.
        if (!settled) record.peersRefused = (record.peersRefused ?? 0) + 1;
        peer.destroy();
        return;
      }
      finish({ peer });
    });
  });

  if ("end" in outcome) return endBindWithoutPeer(outcome.end, hs, ctx, record);
  const peer = outcome.peer;
  await relayBoundPeer(peer, peer.remoteAddress ?? "0.0.0.0", peer.remotePort ?? 0, hs, ctx, record);
}

/** The wait for the peer ended without one: a failure reply on timeout, a close if the client left. */
export function endBindWithoutPeer(
  end: "timeout" | "client gone",
  hs: Handshake,
  ctx: ServerContext,
  record: SessionRecord,
): void {
  if (end === "timeout") {
    record.reason = `no peer connected to ${record.bound} within ${ctx.config.timeouts.bind} ms (timeouts.bind)`;
    hs.replier.failure(Reply.TTL_EXPIRED);
  } else {
    record.reason = "the client closed the connection before a peer connected";
    hs.stream.destroy();
  }
}

/** BIND's second reply (who connected), then the relay between the client and that peer. */
export async function relayBoundPeer(
  peerStream: Duplex,
  host: string,
  port: number,
  hs: Handshake,
  ctx: ServerContext,
  record: SessionRecord,
): Promise<void> {
  const peerAddress = boundAddress(host, port);
  record.peer = formatAddress(peerAddress);
  record.remote = record.peer;
  hs.replier.success(peerAddress);
  const leftover = hs.reader.release();
  const result = await relay(hs.stream, peerStream, {
    leftover,
    idleTimeoutMs: ctx.config.timeouts.idle,
    ...(hs.throttle && { throttle: hs.throttle }),
  });
  record.bytesUp += result.bytesUp;
  record.bytesDown += result.bytesDown;
  if (result.reason !== "completed") record.reason = result.reason.replace("target", "peer");
}

/**
 * The addresses the peer may come from: any (undefined) when the request named all zeros,
 * otherwise the IP named, or every address the name resolves to.
 */
async function expectedPeers(target: SocksAddress): Promise<Set<string> | undefined> {
  if (isUnspecified(target)) return undefined;
  if (target.type !== "domain") return new Set([normalizeIp(target.host)]);
  const all = await lookup(target.host, { all: true, verbatim: true });
  return new Set(all.map((a) => normalizeIp(a.address)));
}
