import type dgram from "node:dgram";
import type net from "node:net";
import type { UdpAssociation } from "../client/associate.js";
import type { ChainDialer } from "../dial/chain.js";
import { normalizeIp } from "../policy/addresses.js";
import type { RequestQuery } from "../policy/policy.js";
import { formatAddress, type SocksAddress } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../protocol/udp.js";
import { bindUdp, controlLocalAddress, placement } from "./announce.js";
import { endBindWithoutPeer, relayBoundPeer } from "./bind.js";
import type { ServerContext, SessionRecord } from "./context.js";
import type { Handshake } from "./handshake.js";
import { boundAddress } from "./replier.js";

/**
 * BIND through an upstream route: the last hop listens, our first reply passes on the address it
 * announced (that is where the peer must connect), the second reply the peer it accepted; then
 * the client and the upstream's stream are relayed as CONNECT does.
 */
export async function bindViaUpstream(
  hs: Handshake,
  ctx: ServerContext,
  record: SessionRecord,
  route: ChainDialer,
  signal: AbortSignal,
): Promise<void> {
  let listening: Awaited<ReturnType<ChainDialer["bind"]>>;
  try {
    listening = await route.bind(hs.target, { signal, timeoutMs: ctx.config.timeouts.connect });
  } catch (err) {
    const e = route.failure(err);
    record.reason = e.message;
    hs.replier.failure(e.reply);
    return;
  }
  const announced = boundAddress(listening.address, listening.port);
  record.bound = formatAddress(announced);
  hs.replier.success(announced);

  const gone = new Promise<"client gone">((resolve) => {
    const done = (): void => resolve("client gone");
    hs.stream.once("end", done);
    hs.stream.once("close", done);
    hs.stream.once("error", done);
    if (hs.reader.peerEnded || hs.stream.destroyed) done();
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), ctx.config.timeouts.bind);
  });
  let outcome: Awaited<typeof listening.accepted> | "client gone" | "timeout";
  try {
    outcome = await Promise.race([listening.accepted, gone, timeout]);
  } catch (err) {
    const e = route.failure(err);
    record.reason = e.message;
    hs.replier.failure(e.reply);
    return;
  } finally {
    clearTimeout(timer);
  }
  if (outcome === "client gone" || outcome === "timeout") {
    listening.close();
    return endBindWithoutPeer(outcome, hs, ctx, record);
  }
  await relayBoundPeer(outcome.socket, outcome.peer.host, outcome.peer.port, hs, ctx, record);
}

/**
 * UDP ASSOCIATE through an upstream route: an association is opened on the last hop, and our own
 * relay socket (announced to the client, on the external address like a direct association)
 * passes datagrams both ways. The client cannot use the upstream's relay itself: the upstream only
 * accepts datagrams from the host that asked for the association, which is us.
 */
export async function associateViaUpstream(
  hs: Handshake,
  query: RequestQuery,
  ctx: ServerContext,
  record: SessionRecord,
  control: net.Socket,
  route: ChainDialer,
  signal: AbortSignal,
): Promise<void> {
  let upstream: UdpAssociation;
  try {
    upstream = await route.associate({ signal, timeoutMs: ctx.config.timeouts.connect });
  } catch (err) {
    const e = route.failure(err);
    record.reason = e.message;
    hs.replier.failure(e.reply);
    return;
  }
  let socket: dgram.Socket;
  const { listenHost, announceHost } = placement(ctx.config, controlLocalAddress(control));
  try {
    socket = await bindUdp(listenHost, ctx.config.relayPorts);
  } catch (err) {
    upstream.close();
    record.reason = `cannot open a UDP relay socket on ${listenHost}: ${(err as Error).message}`;
    hs.replier.failure(Reply.GENERAL_FAILURE);
    return;
  }
  record.datagramsUp = 0;
  record.datagramsDown = 0;
  record.datagramsDropped = {};
  const dropped = (why: string): void => {
    record.datagramsDropped![why] = (record.datagramsDropped![why] ?? 0) + 1;
  };
  const fixedPort = hs.target.port !== 0;
  let client: { address: string; port: number } | undefined;
  socket.on("error", () => {});
  socket.on("message", (msg, rinfo) => {
    if (normalizeIp(rinfo.address) !== record.client || (fixedPort && rinfo.port !== hs.target.port)) {
      return dropped("wrong source");
    }
    client = { address: rinfo.address, port: rinfo.port };
    let d: ReturnType<typeof parseUdpDatagram>;
    try {
      d = parseUdpDatagram(msg);
    } catch {
      return dropped("malformed");
    }
    // Fragments would need reassembly here and again upstream; few clients send them.
    if (d.frag !== 0) return dropped("fragment");
    if (ctx.policy.request({ ...query, target: d.address }).verdict === "deny") return dropped("denied");
    record.datagramsUp!++;
    upstream
      .send(d.data, { host: d.address.host, port: d.address.port })
      .catch(() => dropped("upstream send"));
  });
  upstream.on("message", (data: Buffer, from: SocksAddress) => {
    if (!client) return dropped("no client yet");
    record.datagramsDown!++;
    socket.send(encodeUdpDatagram({ frag: 0, address: from, data }), client.port, client.address);
  });
  upstream.on("error", () => {});
  const bound = boundAddress(announceHost, socket.address().port);
  record.bound = formatAddress(bound);
  hs.replier.success(bound);
  hs.reader.release();
  await new Promise<void>((resolve) => {
    const end = (why?: string): void => {
      if (why && !record.reason) record.reason = why;
      resolve();
    };
    hs.stream.on("data", () => {});
    hs.stream.once("end", () => end());
    hs.stream.once("close", () => end());
    hs.stream.once("error", () => end());
    upstream.once("close", () => end("the upstream ended the UDP association"));
    if (hs.reader.peerEnded || hs.stream.destroyed) end();
    else hs.stream.resume();
  });
  upstream.close();
  try {
    socket.close();
  } catch {
    // Already closed.
  }
  hs.stream.destroy();
}
