import type net from "node:net";
import type { Duplex } from "node:stream";
import { controlLocalAddress } from "../dial/announce.js";
import { replyForError } from "../dial/errors.js";
import type { Listening } from "../dial/outbound-bind.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import { decideCommand, reportDecisions, takeLease } from "./admission.js";
import type { ServerContext, SessionRecord } from "./context.js";
import type { Handshake } from "./handshake.js";
import { relay } from "./relay.js";
import { boundAddress } from "./replier.js";

type Wait =
  | { peer: Duplex; host: string; port: number }
  | { end: "timeout" | "client gone" }
  | { failed: Error };

/**
 * BIND (RFC 1928 §4, SOCKS4): the outbound path listens (here, or on the route's last hop),
 * the first reply says where, one peer the request named and policy admits is accepted, the
 * second reply says who, then the relay as CONNECT does. The listener closes after that one
 * accept, on the timeout (after a failure reply) and when the client goes away.
 */
export async function bindCommand(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  signal: AbortSignal,
  control: net.Socket,
): Promise<void> {
  const decision = decideCommand(hs, query, ctx, record);
  if (!decision) return;
  const lease = await takeLease(hs, query, decision, ctx, record);
  if (!lease) return;
  try {
    let listening: Listening;
    try {
      listening = await ctx.outbound.bind(query, decision, {
        signal,
        timeoutMs: ctx.config.timeouts.connect,
        client: record.client,
        controlLocal: controlLocalAddress(control),
        onPeer: (ip, d) => {
          if (d) reportDecisions([{ decision: d, ip }], ctx, record);
          if (!d || d.verdict === "deny") record.peersRefused = (record.peersRefused ?? 0) + 1;
        },
      });
    } catch (err) {
      record.reason = (err as Error).message;
      hs.replier.failure(replyForError(err));
      return;
    }
    const announced = boundAddress(listening.announced.host, listening.announced.port);
    record.bound = formatAddress(announced);
    hs.replier.success(announced);
    const outcome = await waitForPeer(listening, hs, ctx.config.timeouts.bind);
    // An upstream's BIND carries the peer over its control connection: close only when unused.
    if (!("peer" in outcome)) listening.close();
    if ("failed" in outcome) {
      record.reason = outcome.failed.message;
      hs.replier.failure(replyForError(outcome.failed));
      return;
    }
    if ("end" in outcome) return endWithoutPeer(outcome.end, hs, ctx, record);
    await relayPeer(outcome, hs, ctx, record);
  } finally {
    lease.release();
  }
}

/** The peer, or why there is none: the timeout, the client leaving, the route giving up. */
function waitForPeer(listening: Listening, hs: Handshake, timeoutMs: number): Promise<Wait> {
  return new Promise<Wait>((resolve) => {
    let settled = false;
    const finish = (w: Wait): void => {
      if (settled) {
        if ("peer" in w) w.peer.destroy();
        return;
      }
      settled = true;
      clearTimeout(timer);
      hs.stream.off("end", gone);
      hs.stream.off("close", gone);
      hs.stream.off("error", gone);
      resolve(w);
    };
    const gone = (): void => finish({ end: "client gone" });
    const timer = setTimeout(() => finish({ end: "timeout" }), timeoutMs);
    // A client that closes (or half-closes) while waiting has given up on the peer.
    hs.stream.on("end", gone);
    hs.stream.on("close", gone);
    hs.stream.on("error", gone);
    if (hs.reader.peerEnded || hs.stream.destroyed) gone();
    listening.accepted.then(
      (a) => finish({ peer: a.stream, host: a.peer.host, port: a.peer.port }),
      (err: Error) => finish({ failed: err }),
    );
  });
}

/** The wait for the peer ended without one: a failure reply on timeout, a close if the client left. */
function endWithoutPeer(
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
async function relayPeer(
  peer: { peer: Duplex; host: string; port: number },
  hs: Handshake,
  ctx: ServerContext,
  record: SessionRecord,
): Promise<void> {
  const peerAddress = boundAddress(peer.host, peer.port);
  record.peer = formatAddress(peerAddress);
  record.remote = record.peer;
  hs.replier.success(peerAddress);
  const leftover = hs.reader.release();
  const result = await relay(hs.stream, peer.peer, {
    leftover,
    idleTimeoutMs: ctx.config.timeouts.idle,
    ...(hs.throttle && { throttle: hs.throttle }),
    ...(hs.meter && { meter: hs.meter }),
    tally: record,
  });
  if (result.reason !== "completed") record.reason = result.reason.replace("target", "peer");
}
