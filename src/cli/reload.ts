import { loadConfig } from "../config/load.js";
import { sendControl } from "../server/control.js";

/** `ferry reload`: asks a running server, through its control socket, to reload; prints its answer. */
export async function reloadCommand(flags: { control?: string; config?: string }): Promise<number> {
  let file = flags.control;
  if (!file && flags.config) file = (await loadConfig({ file: flags.config })).control;
  if (!file) {
    process.stderr.write(
      "ferry reload: give --control PATH (the socket `ferry serve --control PATH` opened), or --config FILE with control: PATH in it\n",
    );
    return 2;
  }
  const answer = await sendControl(file, "reload");
  (answer.ok ? process.stdout : process.stderr).write(`${answer.message}\n`);
  return answer.ok ? 0 : 1;
}
