import net from "node:net";
import tls from "node:tls";

/**
 * Called for every read once a socket reads into buffers of ours: `n` bytes are at the start of
 * `buffer`. `this` is the socket. After it returns, the next read goes into the buffer that
 * `nextBuffer` returns: while a write still holds bytes of a buffer, no read may go into it.
 */
export type OwnBufferRead = (this: net.Socket, n: number, buffer: Buffer) => void;

/**
 * Node reads a socket into a fresh 64 KiB allocation per read unless the socket was created with
 * the `onread` option, which only `net.connect` accepts: an accepted socket cannot ask for it.
 * Under a bulk transfer those allocations are freed late and in batches by the garbage collector,
 * glibc hands the memory back to the kernel, and the next reads fault it in again (one minor page
 * fault per 4 KiB read: issue #12). The relay therefore switches a busy socket to Node's own
 * user-buffer mode after the fact, through the same three socket fields `onread` sets, which we
 * find by making a socket with `onread` and seeing where our values landed, rather than by name.
 */
interface OnreadFields {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

function findOnreadFields(): OnreadFields | undefined {
  const buffer = Buffer.alloc(1);
  const generator = (): Buffer => buffer;
  const callback = (): void => {};
  // The constructor takes `onread` as net.connect does, though the typings only list it there.
  const socketWith = (onread: object): net.Socket => new net.Socket({ onread } as net.SocketConstructorOpts);
  const withBuffer = socketWith({ buffer, callback });
  const withGenerator = socketWith({ buffer: generator, callback });
  const find = (socket: net.Socket, value: unknown): symbol | undefined =>
    Object.getOwnPropertySymbols(socket).find(
      (s) => (socket as unknown as Record<symbol, unknown>)[s] === value,
    );
  const fields = {
    buffer: find(withBuffer, buffer),
    callback: find(withBuffer, callback),
    generator: find(withGenerator, generator),
  };
  withBuffer.destroy();
  withGenerator.destroy();
  if (!fields.buffer || !fields.callback || !fields.generator) return undefined;
  return fields as OnreadFields;
}

const fields = findOnreadFields();

type HandleWithUserBuffer = { useUserBuffer?: (buffer: Uint8Array) => void };

/** Whether this Node lets an existing socket switch to reading into a buffer of ours. */
export const canReadIntoOwnBuffer = fields !== undefined;

/**
 * Switches a connected plain-TCP socket that is not in user-buffer mode already to reading into
 * `first`, then into whichever buffer `nextBuffer` returns after each read, calling `onRead` for
 * every read instead of emitting 'data' (bytes Node had already buffered are still emitted as
 * 'data' first). End of stream, errors, pause() and resume() work
 * as before. Returns false, changing nothing, where that is not possible (TLS, a socket without a
 * handle, a Node whose internals differ): the caller carries on with 'data' events.
 */
export function readIntoOwnBuffers(
  socket: net.Socket,
  first: Buffer,
  onRead: OwnBufferRead,
  nextBuffer: () => Buffer,
): boolean {
  if (!fields || !(socket instanceof net.Socket) || socket instanceof tls.TLSSocket) return false;
  const handle = (socket as unknown as { _handle?: HandleWithUserBuffer | null })._handle;
  if (typeof handle?.useUserBuffer !== "function" || socket.destroyed || socket.connecting) return false;
  const own = socket as unknown as Record<symbol, unknown>;
  if (own[fields.buffer]) return false;
  own[fields.buffer] = first;
  own[fields.callback] = onRead;
  own[fields.generator] = nextBuffer;
  handle.useUserBuffer(first);
  return true;
}
