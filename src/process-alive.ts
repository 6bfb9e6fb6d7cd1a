// Kept for scripts/ only, which still import it from here; the file store's lock owns it now
// (./store/process-alive.ts). Remove this once nothing outside src/store imports it.

export { isAlive } from "./store/process-alive.ts";
