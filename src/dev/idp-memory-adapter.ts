// A storage adapter for oidc-provider that keeps everything in one Map per
// identity provider instance. oidc-provider's own memory adapter is a module
// global capped at 1,000 entries (two IdPs in one test process would share it)
// and prints a warning on every start.

import type { Adapter, AdapterPayload } from "oidc-provider";

interface Entry {
  payload: AdapterPayload;
  /** Epoch ms; Infinity for entries without a lifetime. */
  expiresAt: number;
}

/** Kept a little past expiry so oidc-provider can still say "expired" rather than "not found". */
const keepExpiredMs = 60_000;

export function createMemoryAdapter(now: () => number = Date.now): new (name: string) => Adapter {
  const entries = new Map<string, Entry>();

  const live = (key: string): Entry | undefined => {
    const e = entries.get(key);
    if (e !== undefined && e.expiresAt + keepExpiredMs <= now()) {
      entries.delete(key);
      return undefined;
    }
    return e;
  };

  const findBy = (model: string, field: "uid" | "userCode", value: string) => {
    for (const [key, e] of entries) {
      if (key.startsWith(`${model}:`) && e.payload[field] === value && live(key) !== undefined) {
        return structuredClone(e.payload);
      }
    }
    return undefined;
  };

  return class MemoryAdapter implements Adapter {
    readonly #model: string;

    constructor(model: string) {
      this.#model = model;
    }

    #key(id: string) {
      return `${this.#model}:${id}`;
    }

    async upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined) {
      entries.set(this.#key(id), {
        payload: structuredClone(payload),
        expiresAt: expiresIn !== undefined ? now() + expiresIn * 1000 : Number.POSITIVE_INFINITY,
      });
    }

    async find(id: string) {
      const e = live(this.#key(id));
      return e !== undefined ? structuredClone(e.payload) : undefined;
    }

    async findByUid(uid: string) {
      return findBy(this.#model, "uid", uid);
    }

    async findByUserCode(userCode: string) {
      return findBy(this.#model, "userCode", userCode);
    }

    async consume(id: string) {
      const e = live(this.#key(id));
      if (e !== undefined) e.payload = { ...e.payload, consumed: Math.floor(now() / 1000) };
    }

    async destroy(id: string) {
      entries.delete(this.#key(id));
    }

    async revokeByGrantId(grantId: string) {
      for (const [key, e] of entries) {
        if (e.payload.grantId === grantId) entries.delete(key);
      }
    }
  };
}
