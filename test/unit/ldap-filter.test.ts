import assert from "node:assert/strict";
import { test } from "node:test";
import { escapeFilterValue, fillFilter, firstRdnValue } from "../../src/auth/ldap-filter.js";

test("RFC 4515: the five special characters are escaped, others kept", () => {
  assert.equal(escapeFilterValue("al*"), "al\\2a");
  assert.equal(escapeFilterValue("x)(uid=*"), "x\\29\\28uid=\\2a");
  assert.equal(escapeFilterValue("a\\b\0"), "a\\5cb\\00");
  assert.equal(escapeFilterValue("Jöhn Smith.o'neil"), "Jöhn Smith.o'neil");
});

test("filters are filled with escaped values; unknown placeholders stay", () => {
  assert.equal(
    fillFilter("(&(uid={user})(objectClass=person))", { user: "*" }),
    "(&(uid=\\2a)(objectClass=person))",
  );
  assert.equal(fillFilter("(member={dn})", { dn: "uid=a(1),dc=x" }), "(member=uid=a\\281\\29,dc=x)");
  assert.equal(fillFilter("({other})", { user: "a" }), "({other})");
});

test("a group DN's name is its first RDN value", () => {
  assert.equal(firstRdnValue("cn=staff,ou=groups,dc=example,dc=org"), "staff");
  assert.equal(firstRdnValue("CN=Domain Users,CN=Users,DC=corp"), "Domain Users");
  assert.equal(firstRdnValue("staff"), "staff");
});
