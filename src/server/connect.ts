import { replyForError } from "../dial/errors.js";
import type { ResolvePreference } from "../dial/family.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import type { ServerContext, SessionRecord } from "./context.js";
import { decisionEvent } from "./decision-event.js";
import type { Handshake } from "./handshake.js";
import { relay } from "./relay.js";
import { boundAddress } from "./replier.js";

/** CONNECT: dial the target through the Dialer, reply with the real bound address, relay. */
export async function connectCommand(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  signal: AbortSignal,
  /** The deciding rule's route (`via`) and family preference (`resolve`), docs/routes.md. */
  route?: { route?: string; resolve?: ResolvePreference },
): Promise<void> {
  let dialed: Awaited<ReturnType<typeof ctx.dialer.dial>>;
  const denied: string[] = [];
  try {
    dialed = await ctx.dialer.dial(hs.target, {
      signal,
      timeoutMs: ctx.config.timeouts.connect,
      ...(route?.route && { via: route.route }),
      ...(route?.resolve && { resolve: route.resolve }),
      allowAddress: (ip) => {
        const d = ctx.policy.address(query, ip);
        if (d.verdict === "deny") {
          record.rule = d.rule;
          denied.push(`${ip} by rule ${d.rule}: ${d.reason}`);
        }
        if (d.log || d.verdict === "deny")
          ctx.state.emit("decision", decisionEvent("address", record, d, ip));
        return d.verdict === "allow";
      },
    });
  } catch (err) {
    record.reason = (err as Error).message;
    if (replyForError(err) === Reply.NOT_ALLOWED && denied.length > 0) {
      record.reason += `; denied ${denied.join("; ")}`;
    }
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
  });
  record.bytesUp += result.bytesUp;
  record.bytesDown += result.bytesDown;
  if (result.reason !== "completed") record.reason = result.reason;
}
