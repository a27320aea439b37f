import { errorCode, replyForError } from "../dial/errors.js";
import { type Hangup, HangupOptions } from "../dial/hangup.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress } from "../protocol/address.js";
import { admitTarget, takeLease } from "./admission.js";
import type { ServerContext, SessionRecord } from "./context.js";
import type { Handshake } from "./handshake.js";
import { relay } from "./relay.js";
import { boundAddress } from "./replier.js";

/**
 * CONNECT: the target is decided (and resolved where the decision needs it), the admitting
 * rule's limits taken, the target dialled through that rule's route, the real bound address
 * replied, then the relay.
 */
export async function connectCommand(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  hangup: Hangup,
): Promise<void> {
  // Resolution and the connection share timeouts.connect.
  const timeoutMs = ctx.config.timeouts.connect;
  const started = performance.now();
  const admitted = await admitTarget(
    hs,
    query,
    ctx,
    record,
    new HangupOptions(hangup, timeoutMs, record.client),
  );
  if (!admitted) return;
  const lease = await takeLease(hs, query, admitted.decision, ctx, record);
  if (!lease) return;
  record.route = admitted.decision.route ?? "direct";
  try {
    let dialed: Awaited<ReturnType<typeof ctx.outbound.connect>>;
    try {
      const left = timeoutMs > 0 ? Math.max(1, Math.round(timeoutMs - (performance.now() - started))) : 0;
      dialed = await ctx.outbound.connect(admitted, new HangupOptions(hangup, left));
      record.dialMs = performance.now() - started;
    } catch (err) {
      record.dialMs = performance.now() - started;
      // The dial had what was left of timeouts.connect; the reason names the whole of it.
      record.reason =
        errorCode(err) === "ETIMEDOUT"
          ? `connect to ${formatAddress(admitted.target)} timed out after ${timeoutMs} ms (timeouts.connect)`
          : (err as Error).message;
      hs.replier.failure(replyForError(err));
      return;
    }
    record.remote = formatAddress(dialed.remote);
    const bound = boundAddress(dialed.local.host, dialed.local.port);
    record.bound = formatAddress(bound);
    hs.replier.success(bound);
    const clientEnded = hs.reader.peerEnded;
    const leftover = hs.reader.release();
    const result = await relay(hs.stream, dialed.stream, {
      leftover,
      clientEnded,
      idleTimeoutMs: ctx.config.timeouts.idle,
      ...(hs.throttle && { throttle: hs.throttle }),
      ...(hs.meter && { meter: hs.meter }),
      tally: record,
    });
    if (result.reason !== "completed") record.reason = result.reason;
  } finally {
    lease.release();
  }
}
