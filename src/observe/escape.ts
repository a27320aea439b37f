/**
 * Control characters in log fields, shown as visible text: a client chooses user names, domain
 * names and the like, and a raw line break (or U+2028, or a C1 code a terminal obeys) in one
 * would let it forge log lines or rewrite the administrator's terminal.
 *
 * Escaped: C0 (U+0000–U+001F), DEL, C1 (U+0080–U+009F), U+2028 and U+2029, as `\n`, `\r`, `\t`,
 * `\xHH` or `\uHHHH`. A backslash is left alone, so `\n` in a log may also be those two
 * characters as sent; the escapes are for reading, not for decoding.
 */

/** The characters escaped, as a regular expression class body (one definition for the three below). */
const CLASS = "\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029";
const CONTROL = new RegExp(`[${CLASS}]`);
const CONTROLS = new RegExp(`[${CLASS}]`, "g");

const isControl = (cp: number): boolean =>
  cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f) || cp === 0x2028 || cp === 0x2029;

/** The visible form of one control character. */
function visible(cp: number): string {
  if (cp === 0x0a) return "\\n";
  if (cp === 0x0d) return "\\r";
  if (cp === 0x09) return "\\t";
  if (cp <= 0xff) return `\\x${cp.toString(16).padStart(2, "0")}`;
  return `\\u${cp.toString(16).padStart(4, "0")}`;
}

/** `s` with every control character replaced by its visible form. */
export function escapeControls(s: string): string {
  if (!CONTROL.test(s)) return s;
  return s.replace(CONTROLS, (c) => visible(c.charCodeAt(0)));
}

/**
 * One JSON escape sequence (a short one, or \uHHHH), or one control character left raw
 * (JSON.stringify keeps DEL, C1, U+2028 and U+2029 as they are).
 */
const IN_JSON = new RegExp(`\\\\(u[0-9a-fA-F]{4}|.)|[${CLASS}]`, "g");
/** Anything IN_JSON could match: a backslash or a control character. */
const MAYBE_IN_JSON = new RegExp(`[\\\\${CLASS}]`);
const SHORT: Record<string, number> = { n: 0x0a, r: 0x0d, t: 0x09, b: 0x08, f: 0x0c };

/**
 * The same for one serialized JSON log line (pino's output, before any formatting): every string
 * in it, message, field or key, decodes to its escaped form. Valid JSON in, valid JSON out; a
 * final line break is kept.
 */
export function escapeControlsInJson(line: string): string {
  const end = line.endsWith("\n") ? line.length - 1 : line.length;
  const body = line.slice(0, end);
  if (!MAYBE_IN_JSON.test(body)) return line;
  const escaped = body.replace(IN_JSON, (match: string, esc: string | undefined) => {
    let cp: number | undefined;
    if (esc === undefined) cp = match.charCodeAt(0);
    else if (esc.length === 5) cp = Number.parseInt(esc.slice(1), 16);
    else cp = SHORT[esc];
    // The visible form's backslash is itself escaped in JSON.
    return cp !== undefined && isControl(cp) ? `\\${visible(cp)}` : match;
  });
  return escaped + line.slice(end);
}
