// The MongoClient a MongoDB store runs on: one the caller gives (and keeps owning), or one made
// here from a connection string (the store owns it and closes it), with our defaults for what
// neither the caller's options nor the URI set.

import { MongoClient, type MongoClientOptions } from "mongodb";

const DEFAULT_CLIENT_OPTIONS = {
  serverSelectionTimeoutMS: 5_000,
  connectTimeoutMS: 5_000,
  appName: "tokenvend",
} as const;

/**
 * Every collection's concerns (docs/STORAGE.md): nothing acknowledged or read that can roll back
 * after a failover.
 */
export const MAJORITY = {
  writeConcern: { w: "majority" },
  readConcern: { level: "majority" },
} as const;

export interface StoreClient {
  readonly client: MongoClient;
  /** Whether the store made it, and so closes it. */
  readonly owned: boolean;
}

export function storeClient(
  given: MongoClient | string,
  options: MongoClientOptions | undefined,
): StoreClient {
  if (typeof given === "string") {
    if (!/^mongodb(\+srv)?:\/\//.test(given)) {
      throw new TypeError("client must be a MongoClient or a mongodb:// or mongodb+srv:// URI");
    }
    return { client: new MongoClient(given, clientOptionsFor(given, options)), owned: true };
  }
  if (given instanceof MongoClient) return { client: given, owned: false };
  throw new TypeError("client must be a MongoClient or a mongodb:// or mongodb+srv:// URI");
}

/** Our defaults, each only where neither the caller's options nor the URI set it. */
function clientOptionsFor(uri: string, given: MongoClientOptions | undefined): MongoClientOptions {
  const query = uri.includes("?") ? uri.slice(uri.indexOf("?") + 1) : "";
  const inUri = new Set([...new URLSearchParams(query).keys()].map((k) => k.toLowerCase()));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(DEFAULT_CLIENT_OPTIONS)) {
    if (!inUri.has(k.toLowerCase())) out[k] = v;
  }
  return { ...out, ...given } as MongoClientOptions;
}
