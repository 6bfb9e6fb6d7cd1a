// Fan-out of renewals to a key's streams with latest-value delivery: a slow
// subscriber skips to the newest token instead of blocking others or buffering.
//
// Push first: a listener gets each event by a plain call, so a stream costs one
// small object and a renewal costs one call per stream, not a chain of promises.
// A large fan-out runs in chunks, yielding between them, so the first streams'
// bytes leave (and other I/O, like the publisher's own reply, goes on) while
// the rest are written; a newer event for the same id takes over the rest of an
// older one's fan-out.

/** Receives one stream's events, by plain calls. */
export interface Listener<E> {
  /** A newer event. Called from a fan-out; must not throw. */
  next(event: E): void;
  /**
   * The end, once; no call follows. An error (revoked, no longer renewable,
   * shutting down, refused), or undefined for a clean end (the caller left).
   */
  end(error: Error | undefined): void;
}

export interface WatchHub<E> {
  /** Adds a push listener of `id`; returns its removal (idempotent). */
  listen(id: string, listener: Listener<E>): () => void;
  publish(id: string, event: E): void;
  /** Ends every listener of `id` with `reason`. */
  end(id: string, reason: Error): void;
  endAll(reason: Error): void;
  /** Whether `id` has at least one listener. */
  has(id: string): boolean;
  /** Ids with at least one listener. */
  ids(): IterableIterator<string>;
  idCount(): number;
  subscriberCount(): number;
}

export interface WatchHubOptions {
  /** Called when an id gets its first listener. */
  onFirst?: (id: string) => void;
  /** Called when an id loses its last listener. */
  onLast?: (id: string) => void;
  /** Listeners called per turn of a fan-out before yielding (default 256). */
  chunkSize?: number;
  /** Runs the next chunk of a fan-out later (default setImmediate: after pending I/O). */
  defer?: (run: () => void) => void;
}

interface Entry<E> {
  readonly listeners: Set<Listener<E>>;
  /** Bumped by every publish and end: a fan-out still running for an older value stops. */
  seq: number;
}

const defaultDefer = (run: () => void) => {
  setImmediate(run);
};

export function createWatchHub<E>(opts: WatchHubOptions = {}): WatchHub<E> {
  const byId = new Map<string, Entry<E>>();
  const chunkSize = Math.max(1, opts.chunkSize ?? 256);
  const defer = opts.defer ?? defaultDefer;
  let count = 0;

  const remove = (id: string, listener: Listener<E>): boolean => {
    const entry = byId.get(id);
    if (entry === undefined || !entry.listeners.delete(listener)) return false;
    count--;
    if (entry.listeners.size === 0) {
      entry.seq++;
      byId.delete(id);
      opts.onLast?.(id);
    }
    return true;
  };

  const listen = (id: string, listener: Listener<E>) => {
    let entry = byId.get(id);
    const first = entry === undefined;
    if (entry === undefined) {
      entry = { listeners: new Set(), seq: 0 };
      byId.set(id, entry);
    }
    entry.listeners.add(listener);
    count++;
    if (first) opts.onFirst?.(id);
    return () => {
      remove(id, listener);
    };
  };

  return {
    listen,
    publish(id, event) {
      const entry = byId.get(id);
      if (entry === undefined) return;
      const seq = ++entry.seq;
      // A snapshot: listeners added meanwhile already saw a current value.
      const targets = [...entry.listeners];
      let i = 0;
      const run = () => {
        if (entry.seq !== seq) return;
        const stop = Math.min(targets.length, i + chunkSize);
        for (; i < stop; i++) {
          const l = targets[i]!;
          if (entry.listeners.has(l)) l.next(event);
        }
        if (i < targets.length) defer(run);
      };
      run();
    },
    end(id, reason) {
      const entry = byId.get(id);
      if (entry === undefined) return;
      for (const l of [...entry.listeners]) {
        if (remove(id, l)) l.end(reason);
      }
    },
    endAll(reason) {
      for (const id of [...byId.keys()]) this.end(id, reason);
    },
    has: (id) => byId.has(id),
    ids: () => byId.keys(),
    idCount: () => byId.size,
    subscriberCount: () => count,
  };
}
