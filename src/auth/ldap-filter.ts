/**
 * RFC 4515 section 3: in a filter's assertion value, `*`, `(`, `)`, `\` and NUL must be written
 * as a backslash and two hex digits. A user name put into a filter unescaped could widen it
 * (`*`, or `x)(uid=*`) and log in as someone else.
 */
export function escapeFilterValue(value: string): string {
  return value.replace(/[*()\\\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** `template` with every `{name}` replaced by the escaped value of `values[name]`. */
export function fillFilter(template: string, values: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in values ? escapeFilterValue(values[name]!) : whole,
  );
}

/**
 * The value of a DN's first RDN, unescaped enough for a group name: `cn=staff,ou=groups,...`
 * is `staff`. A DN whose first RDN is multi-valued or has escapes is returned whole.
 */
export function firstRdnValue(dn: string): string {
  const m = /^[^=,+\\]+=([^,+\\"]+),/.exec(dn.trim());
  return m ? m[1]!.trim() : dn;
}
