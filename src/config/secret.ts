import { readFile } from "node:fs/promises";
import path from "node:path";
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

/**
 * A secret given as `key: "${VAR}"` (from the environment) or `keyFile: PATH` (trailing newline
 * dropped; relative to `baseDir`). A literal value is refused: configuration files get copied,
 * committed and read by others. Throws an Error whose message names the key and the fix.
 */
export async function readSecret(
  spec: { value?: string; file?: string },
  /** The two keys' names, and what the secret is called in messages (default "secret"). */
  keys: { value: string; file: string; noun?: string },
  options: { baseDir?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Secret | undefined> {
  if (spec.value !== undefined && spec.file !== undefined) {
    throw new Error(`give either ${keys.value}: or ${keys.file}:, not both`);
  }
  if (spec.value !== undefined) {
    const m = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(spec.value);
    if (!m) {
      throw new Error(
        `${keys.value}: a literal ${keys.noun ?? "secret"} in the configuration is refused (config files get copied, committed and read by others); write ${keys.value}: "\${NAME}" and set the environment variable NAME, or use ${keys.file}: PATH`,
      );
    }
    const v = (options.env ?? process.env)[m[1]!];
    if (!v) {
      throw new Error(
        `${keys.value}: the environment variable ${m[1]} is not set (or empty); export it before starting ferry`,
      );
    }
    return new Secret(v);
  }
  if (spec.file !== undefined) {
    const file = path.resolve(options.baseDir ?? process.cwd(), spec.file);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      throw new Error(
        `${keys.file}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    text = text.replace(/\r?\n$/, "");
    if (!text) throw new Error(`${keys.file}: ${file} is empty`);
    return new Secret(text);
  }
  return undefined;
}
