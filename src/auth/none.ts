import { Method } from "../protocol/socks5.js";
import type { AuthMethod } from "./method.js";

export const noAuth: AuthMethod = {
  name: "none",
  code: Method.NO_AUTH,
  async negotiate() {
    return {};
  },
};
