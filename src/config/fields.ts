import { z } from "zod";
import { parseDuration } from "./units.js";

/** Runs a parser on a value, turning its Error into a zod issue at the right key. */
export function via<I, O>(parse: (v: I) => O) {
  return (v: I, ctx: z.core.$RefinementCtx<I>): O => {
    try {
      return parse(v);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  };
}

/** "500ms", "10s", "5m", "1h", or a number of milliseconds. */
export const durationSchema = z.union([z.string(), z.number().nonnegative()]).transform(via(parseDuration));
