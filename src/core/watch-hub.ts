// Fan-out of renewals to a key's streams with latest-value delivery: a slow
// subscriber skips to the newest token instead of blocking others or buffering.

export interface Subscription<E> {
  /** Next event newer than the last one taken; undefined when `signal` aborts. Throws the end reason. */
  next(signal: AbortSignal): Promise<E | undefined>;
  close(): void;
}

export interface WatchHub<E> {
  subscribe(id: string): Subscription<E>;
  publish(id: string, event: E): void;
  /** Ends every subscription of `id` with `reason`. */
  end(id: string, reason: Error): void;
  endAll(reason: Error): void;
  /** Whether `id` has at least one subscriber. */
  has(id: string): boolean;
  /** Ids with at least one subscriber. */
  ids(): IterableIterator<string>;
  idCount(): number;
  subscriberCount(): number;
}

export interface WatchHubOptions {
  /** Called when an id gets its first subscriber. */
  onFirst?: (id: string) => void;
  /** Called when an id loses its last subscriber. */
  onLast?: (id: string) => void;
}

interface Sub<E> {
  pending: E | undefined;
  ended: Error | undefined;
  wake: (() => void) | undefined;
}

export function createWatchHub<E>(opts: WatchHubOptions = {}): WatchHub<E> {
  const byId = new Map<string, Set<Sub<E>>>();
  let count = 0;

  const remove = (id: string, sub: Sub<E>) => {
    const set = byId.get(id);
    if (set === undefined || !set.delete(sub)) return;
    count--;
    if (set.size === 0) {
      byId.delete(id);
      opts.onLast?.(id);
    }
  };

  return {
    subscribe(id) {
      const sub: Sub<E> = { pending: undefined, ended: undefined, wake: undefined };
      let set = byId.get(id);
      const first = set === undefined;
      if (set === undefined) {
        set = new Set();
        byId.set(id, set);
      }
      set.add(sub);
      count++;
      if (first) opts.onFirst?.(id);
      return {
        async next(signal) {
          while (sub.pending === undefined && sub.ended === undefined) {
            if (signal.aborted) return undefined;
            await new Promise<void>((resolve) => {
              const done = () => {
                signal.removeEventListener("abort", done);
                sub.wake = undefined;
                resolve();
              };
              sub.wake = done;
              signal.addEventListener("abort", done, { once: true });
            });
          }
          const e = sub.pending;
          if (e !== undefined) {
            sub.pending = undefined;
            return e;
          }
          throw sub.ended;
        },
        close: () => remove(id, sub),
      };
    },
    publish(id, event) {
      for (const sub of byId.get(id) ?? []) {
        sub.pending = event;
        sub.wake?.();
      }
    },
    end(id, reason) {
      const set = byId.get(id);
      if (set === undefined) return;
      for (const sub of [...set]) {
        sub.ended = reason;
        sub.wake?.();
        remove(id, sub);
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
