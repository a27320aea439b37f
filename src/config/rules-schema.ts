import { z } from "zod";
import { parseCidr, parseDestination, parsePortRange, type RuleBody } from "../policy/rules.js";
import { via } from "./fields.js";
import { resolveSchema } from "./routes-schema.js";
import { parseRate } from "./units.js";

/** A list, or one value standing for a list of one; an empty list is refused (it would match nothing). */
function listOf<T extends z.ZodType>(item: T) {
  return z.preprocess(
    (v) => (Array.isArray(v) || v === undefined ? v : [v]),
    z.array(item).min(1, "an empty list matches nothing; leave the key out to match anything").optional(),
  );
}

const scalar = z.union([z.string(), z.number()]);

export const rateSchema = z.union([z.string(), z.number()]).transform(via(parseRate));

const clientBody = z.strictObject({
  /** Client addresses: ranges or single addresses. */
  from: listOf(z.string().transform(via(parseCidr))),
  log: z.boolean().default(false),
});

const requestBody = z.strictObject({
  from: listOf(z.string().transform(via(parseCidr))),
  users: listOf(z.string().min(1)),
  groups: listOf(z.string().min(1)),
  methods: listOf(z.enum(["none", "userpass", "gssapi", "tls-cert"])),
  versions: listOf(z.union([z.literal(4), z.literal(5)])),
  commands: listOf(z.enum(["connect", "bind", "udp"])),
  to: listOf(scalar.transform(via(parseDestination))),
  ports: listOf(scalar.transform(via(parsePortRange))),
  log: z.boolean().default(false),
  bandwidth: rateSchema.optional(),
  sessions: z.number().int().positive().optional(),
  /** The route: an upstream or chain name, or `direct` (docs/routes.md). */
  via: z.string().min(1).optional(),
  /** Address-family preference for what this rule admits (docs/routes.md). */
  resolve: resolveSchema.optional(),
});

/** `- allow: {...}` or `- deny: {...}`: exactly one of the two. */
function ruleItem<B extends z.ZodType<RuleBody, unknown>>(body: B) {
  return z
    .strictObject({ allow: body.optional(), deny: body.optional() })
    .superRefine((v, ctx) => {
      const n = Number(v.allow !== undefined) + Number(v.deny !== undefined);
      if (n !== 1) {
        ctx.addIssue({
          code: "custom",
          message:
            n === 0
              ? "a rule is `allow: {...}` or `deny: {...}`"
              : "a rule has either allow or deny, not both; split it in two",
        });
      }
    })
    .transform((v, ctx) => {
      const action = v.allow !== undefined ? ("allow" as const) : ("deny" as const);
      const body = (v.allow ?? v.deny) as RuleBody;
      if (action === "deny" && (body.via !== undefined || body.resolve !== undefined)) {
        ctx.addIssue({
          code: "custom",
          path: ["deny"],
          message:
            "via and resolve choose how an admitted request leaves; they only make sense on allow rules",
        });
        return z.NEVER;
      }
      if (action === "deny" && (body.bandwidth !== undefined || body.sessions !== undefined)) {
        ctx.addIssue({
          code: "custom",
          path: ["deny"],
          message: "bandwidth and sessions cap what a rule admits; they only make sense on allow rules",
        });
        return z.NEVER;
      }
      return { action, ...body };
    });
}

export const clientRulesSchema = z.array(ruleItem(clientBody));
export const requestRulesSchema = z.array(ruleItem(requestBody));

/** `groups: { staff: [alice, bob] }`. */
export const groupsSchema = z.record(z.string().min(1), z.array(z.string().min(1)));

export type ParsedRule = z.output<typeof requestRulesSchema>[number];
