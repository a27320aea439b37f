import fc from "fast-check";

const letters = "abcdefghijklmnopqrstuvwxyz";
const inner = `${letters}0123456789-_`;
const edge = `${letters}0123456789_`;

/** One label in normal form: [a-z0-9_-], 1 to `max` bytes, no hyphen at either end. */
const label = (max: number, chars = edge): fc.Arbitrary<string> =>
  fc
    .tuple(
      fc.constantFrom(...chars),
      fc.string({ unit: fc.constantFrom(...inner), maxLength: Math.max(0, max - 2) }),
      fc.constantFrom(...edge),
    )
    .map(([a, mid, z]) => (max === 1 ? a : `${a}${mid}${z}`));

/**
 * Host names a server accepts unchanged (lower case, no trailing dot, last label not a number):
 * short ones, long ones up to the 253-byte limit, and fast-check's own domains.
 */
export const normalHostName: fc.Arbitrary<string> = fc
  .oneof(
    fc.domain(),
    fc
      .tuple(fc.array(label(10), { maxLength: 4 }), label(10, letters))
      .map(([ls, last]) => [...ls, last].join(".")),
    fc
      .tuple(fc.array(label(63), { minLength: 3, maxLength: 5 }), label(63, letters))
      .map(([ls, last]) => [...ls, last].join(".").slice(-253))
      .filter((n) => !n.startsWith(".") && !n.startsWith("-")),
  )
  .filter((n) => n.length <= 253 && /[a-z_]/.test(n.slice(n.lastIndexOf(".") + 1)));

/**
 * Bytes that look like names often enough to reach every rule: case, dots, digits, 0x, hyphens,
 * IPv6 colons and brackets, NUL, spaces, bytes over 0x7f.
 */
export const nameLikeBytes: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 260 }).map((a) => Buffer.from(a)),
  fc
    .array(
      fc.constantFrom(
        ..."aAzZ09_-.x:[]%",
        "0x",
        "127",
        "0.",
        "example",
        "COM",
        "xn--",
        "\0",
        " ",
        "\u00e9",
        "\u00ff",
      ),
      { maxLength: 40 },
    )
    .map((parts) => Buffer.from(parts.join(""), "latin1")),
  normalHostName.map((n) => Buffer.from(n)),
  // Around the 253-byte limit, with and without a trailing dot.
  fc
    .tuple(normalHostName, fc.integer({ min: 248, max: 255 }), fc.boolean())
    .map(([n, len, dot]) => Buffer.from(`${n.padStart(dot ? len - 1 : len, "a.")}${dot ? "." : ""}`)),
  // Addresses: dotted quads, the legacy forms getaddrinfo also reads (0x7f.1, 2130706433), IPv6.
  fc.oneof(fc.ipV4(), fc.ipV4Extended(), fc.ipV6()).map((a) => Buffer.from(a)),
  fc
    .tuple(normalHostName, fc.boolean())
    .map(([n, dot]) => Buffer.from(`${n.toUpperCase()}${dot ? "." : ""}`)),
);
