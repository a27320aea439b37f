/**
 * Read buffers for relays in bulk mode, reused across sessions: a buffer of ours that
 * lives on is never handed back to the kernel and faulted in again, as Node's per-read
 * allocations are (see read-into.ts). Only idle buffers are kept, up to a bound, so a burst of
 * bulk sessions does not pin its peak memory for ever.
 */
export const READ_BUFFER_SIZE = 128 * 1024;
const KEEP = 64;
const idle: Buffer[] = [];

export function takeReadBuffer(): Buffer {
  return idle.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_SIZE);
}

/** Returns a buffer nothing reads into or writes from any more. */
export function giveReadBuffer(buffer: Buffer): void {
  if (idle.length < KEEP) idle.push(buffer);
}
