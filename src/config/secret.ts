import { inspect } from "node:util";

/**
 * A credential read from the environment or a file. It prints as [redacted] in JSON, logs and
 * util.inspect, so a configuration object can be logged without leaking it; `reveal()` is the
 * one way to the text, used only where the bytes go on the wire.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toJSON(): string {
    return "[redacted]";
  }
  toString(): string {
    return "[redacted]";
  }
  [inspect.custom](): string {
    return "[redacted]";
  }
}
