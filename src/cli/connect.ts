import { connect } from "../client/connect.js";
import { chainFromFlags } from "./proxy-option.js";

/** Flags of `ferry connect`. */
export interface ConnectFlags {
  proxy?: string[];
  timeout?: number;
}

/**
 * `ferry connect HOST PORT`: joins stdin/stdout to the target through the chain, like netcat,
 * so it works as OpenSSH's ProxyCommand. Half-close is passed on both ways.
 */
export async function connectTool(host: string, port: string, flags: ConnectFlags): Promise<number> {
  const chain = chainFromFlags(flags.proxy);
  const socket = await connect(
    chain,
    { host, port: Number(port) },
    { timeout: flags.timeout, allowHalfOpen: true },
  );
  return new Promise<number>((resolve) => {
    let code = 0;
    socket.on("error", (err) => {
      process.stderr.write(`ferry connect: ${err.message}\n`);
      code = 1;
    });
    process.stdin.pipe(socket);
    socket.pipe(process.stdout);
    socket.on("close", () => {
      process.stdin.unpipe(socket);
      process.stdin.pause();
      process.stdin.destroy();
      resolve(code);
    });
  });
}
