/**
 * Module customization hooks (module.register) that report every URL the ESM loader resolves to
 * the port given at registration; see import-recorder.ts. They run on the loader's own thread.
 */
import type { MessagePort } from "node:worker_threads";

let port: MessagePort | undefined;

export function initialize(data: { port: MessagePort }): void {
  port = data.port;
}

type Next = (specifier: string, context: unknown) => Promise<{ url: string }>;

export async function resolve(specifier: string, context: unknown, next: Next): Promise<{ url: string }> {
  const result = await next(specifier, context);
  port?.postMessage(result.url);
  return result;
}
