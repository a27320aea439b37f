/**
 * The contract every parser in this folder follows (sans-I/O): given the bytes received so far,
 * return `undefined` when more bytes are needed, the value plus how many bytes it used, or throw
 * a ProtocolError. Parsers never keep state and never look past what they consume.
 */
export type Parsed<T> = { value: T; consumed: number } | undefined;
export type Parser<T> = (buf: Uint8Array) => Parsed<T>;

export function readPort(buf: Uint8Array, at: number): number {
  return (buf[at]! << 8) | buf[at + 1]!;
}

export function writePort(out: Uint8Array, at: number, port: number): void {
  out[at] = (port >>> 8) & 0xff;
  out[at + 1] = port & 0xff;
}

export function assertPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`invalid port ${port}`);
}
