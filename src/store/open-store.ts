// Opens the store a replica (or `npm run reencrypt`) runs on, from plain options: which adapter
// with its settings, the encryption keys (a keyring already loaded, or where to read one), a
// logger. The caller maps its configuration to these; nothing here reads config or env. The
// MongoDB and file stores encrypt tokens at rest and refuse to open without a key
// (SealingError INVALID_KEY).

import { type Logger, noopLogger } from "../core/logger.ts";
import type { StoreCapacity, TokenStore } from "../core/token-store.ts";
import { createMemoryStore } from "./memory-store.ts";
import {
  createKeyring,
  KEY_HOWTO,
  type Keyring,
  parseKeys,
  readKeyFiles,
  SealingError,
} from "./sealing.ts";

export type StoreSettings =
  | { readonly kind: "memory" }
  /** `uri` may hold credentials: never log it. */
  | {
      readonly kind: "mongo";
      readonly uri: string;
      readonly dbName: string;
      readonly changeLogMarginMs?: number | undefined;
      readonly changeLogRetentionMs?: number | undefined;
    }
  | { readonly kind: "file"; readonly dir: string };

/** Where the keys come from: the text keys first, then the files; the first key seals. */
export interface KeySources {
  /** `kid:base64key` entries, comma-separated. */
  readonly keyText?: string | undefined;
  /** One key per file, the file name being the key id. */
  readonly keyFiles?: readonly string[] | undefined;
}

export interface OpenStoreOptions {
  readonly store: StoreSettings;
  /** Unused by the memory store. */
  readonly keys: { readonly keyring: Keyring } | KeySources;
  readonly logger?: Logger | undefined;
  /**
   * MongoDB unreachable at start: the start-up work (indexes, key check, change feed) is retried
   * in the background; a key check that then fails (KEY_MISMATCH) is reported here, once.
   */
  readonly onKeyMismatch?: ((err: SealingError) => void) | undefined;
  /** The memory and file stores' bound (limits.store); MongoDB is bounded by its own disks. */
  readonly capacity?: StoreCapacity | undefined;
}

// How often the start-up work is tried again while MongoDB does not answer.
const prepareRetryMs = 5_000;

/** The start-up work retried until it succeeds; a key mismatch found meanwhile goes to `onFatal`. */
function retryPrepare<S extends { prepare(): Promise<void>; close(): Promise<void> }>(
  store: S,
  logger: Logger,
  onFatal: ((err: SealingError) => void) | undefined,
): S {
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const attempt = () => {
    timer = setTimeout(() => {
      store.prepare().then(
        () => logger.info({}, "the MongoDB store is prepared"),
        (err: unknown) => {
          if (closed) return;
          if (err instanceof SealingError) {
            logger.error({ err: err.message }, "the MongoDB store refuses this keyring");
            onFatal?.(err);
            return;
          }
          attempt();
        },
      );
    }, prepareRetryMs);
    timer.unref();
  };
  attempt();
  const close = store.close.bind(store);
  return Object.assign(store, {
    close: async () => {
      closed = true;
      clearTimeout(timer);
      await close();
    },
  });
}

/** The keyring of every key the sources name, or undefined when they name none. */
export async function loadKeyring(sources: KeySources): Promise<Keyring | undefined> {
  const keys = [
    ...(sources.keyText !== undefined ? parseKeys(sources.keyText) : []),
    ...(sources.keyFiles !== undefined && sources.keyFiles.length > 0
      ? await readKeyFiles(sources.keyFiles)
      : []),
  ];
  return keys.length > 0 ? createKeyring(keys) : undefined;
}

export async function openStore(opts: OpenStoreOptions): Promise<TokenStore> {
  const s = opts.store;
  const logger = opts.logger ?? noopLogger;
  if (s.kind === "memory") return createMemoryStore({ capacity: opts.capacity });
  const keyring = "keyring" in opts.keys ? opts.keys.keyring : await loadKeyring(opts.keys);
  if (keyring === undefined) {
    throw new SealingError(
      "INVALID_KEY",
      `the ${s.kind === "mongo" ? "MongoDB" : "file"} store encrypts tokens at rest and needs a key: ` +
        `set TOKENVEND_ENCRYPTION_KEYS=primary:<key> (or TOKENVEND_ENCRYPTION_KEY_FILES); ${KEY_HOWTO}`,
    );
  }
  // Loaded only when chosen: the MongoDB driver alone is ~35 MB of a memory-store replica.
  if (s.kind === "file") {
    const { createFileStore } = await import("./file-store.ts");
    return createFileStore({ dir: s.dir, keyring, logger, capacity: opts.capacity });
  }
  const { createMongoStore } = await import("./mongo-store.ts");
  const store = createMongoStore({
    client: s.uri,
    dbName: s.dbName,
    keyring,
    logger,
    changeLogMarginMs: s.changeLogMarginMs,
    changeLogRetentionMs: s.changeLogRetentionMs,
  });
  // Indexes, the key check and the change feed, before serving: a key whose material differs
  // from the one recorded for its id refuses the start. A MongoDB unreachable at start is not a
  // reason to refuse it (cached tokens do not need it): writes wait for this work to succeed.
  try {
    await store.prepare();
  } catch (err) {
    if (err instanceof SealingError) {
      await store.close();
      throw err;
    }
    logger.warn(
      { err: err instanceof Error ? err.message : String(err) },
      "could not prepare the MongoDB store yet (indexes, key check, change feed); retrying",
    );
    return retryPrepare(store, logger, opts.onKeyMismatch);
  }
  return store;
}
