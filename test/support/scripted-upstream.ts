// An UpstreamClient for unit tests of the core only: each call takes the next
// scripted reply of its method (tokens, an UpstreamError, or a deferred reply the
// test settles later), and every call is recorded with the request it got,
// signal included, so a test can prove whose signal a refresh ran under.
// Integration tests use the real oidc-provider instead (src/dev/local-idp.ts).

import {
  type ClientCredentialsRequest,
  type RefreshRequest,
  type RevokeRequest,
  type UpstreamClient,
  UpstreamError,
  type UpstreamTokenResponse,
} from "../../src/core/upstream.ts";

export type UpstreamMethod = "clientCredentials" | "refresh" | "revoke";

interface RequestOf {
  clientCredentials: ClientCredentialsRequest;
  refresh: RefreshRequest;
  revoke: RevokeRequest;
}

export interface RecordedCall<M extends UpstreamMethod = UpstreamMethod> {
  readonly method: M;
  readonly provider: string;
  readonly request: RequestOf[M];
  /** The signal the call ran under. */
  readonly signal: AbortSignal;
}

/**
 * A reply the test settles later. A call waiting on it rejects when its signal
 * aborts, as a real client does. `M` is the method the test scripts it for.
 */
export interface Deferred<M extends UpstreamMethod = UpstreamMethod> {
  readonly kind: "deferred";
  /** Resolves with the call once a call has taken this reply. */
  readonly called: Promise<RecordedCall<M>>;
  resolve(response?: UpstreamTokenResponse): void;
  reject(err: unknown): void;
}

export type Reply =
  | { readonly kind: "ok"; readonly response: UpstreamTokenResponse | undefined }
  | { readonly kind: "error"; readonly error: unknown }
  | Deferred;

export interface TokenFields {
  readonly accessToken: string;
  readonly tokenType?: string;
  readonly expiresInSec?: number;
  readonly refreshToken?: string;
  readonly idToken?: string;
  readonly scopes?: readonly string[];
}

/** A token endpoint success; fields left out are left out of the response (as a provider may). */
export function ok(fields?: TokenFields): Reply {
  if (fields === undefined) return { kind: "ok", response: undefined };
  return { kind: "ok", response: { tokenType: "Bearer", ...fields } };
}

/** A transient failure: network, 5xx, or 429/503 with Retry-After. */
export function transient(
  opts: { status?: number; retryAfterMs?: number; message?: string } = {},
): Reply {
  return {
    kind: "error",
    error: new UpstreamError(opts.message ?? "token endpoint unavailable", {
      permanent: false,
      status: opts.status ?? 503,
      retryAfterMs: opts.retryAfterMs,
    }),
  };
}

/** A permanent rejection such as invalid_grant. */
export function permanent(oauthError = "invalid_grant", status = 400): Reply {
  return {
    kind: "error",
    error: new UpstreamError(`the provider answered ${oauthError}`, {
      permanent: true,
      oauthError,
      status,
    }),
  };
}

/** Any thrown value, for failures that are not UpstreamErrors. */
export function fails(error: unknown): Reply {
  return { kind: "error", error };
}

type Outcome =
  | { readonly ok: true; readonly value: UpstreamTokenResponse | undefined }
  | { readonly ok: false; readonly error: unknown };

/** How a call waits on a deferred reply; kept off the public Deferred. */
const waiters = new WeakMap<
  Deferred,
  (call: RecordedCall) => Promise<UpstreamTokenResponse | undefined>
>();

export function deferred<M extends UpstreamMethod = "refresh">(): Deferred<M> {
  let onCall!: (call: RecordedCall<M>) => void;
  const called = new Promise<RecordedCall<M>>((resolve) => {
    onCall = resolve;
  });
  let outcome: Outcome | undefined;
  let deliver: ((o: Outcome) => void) | undefined;
  const settle = (o: Outcome) => {
    if (outcome !== undefined) throw new Error("this deferred reply was settled already");
    outcome = o;
    deliver?.(o);
  };
  const d: Deferred<M> = {
    kind: "deferred",
    called,
    resolve: (value) => settle({ ok: true, value }),
    reject: (error) => settle({ ok: false, error }),
  };
  waiters.set(d, (call) => {
    if (deliver !== undefined) throw new Error("a deferred reply serves one call");
    onCall(call as RecordedCall<M>);
    return new Promise((resolve, reject) => {
      const signal = call.signal;
      const onAbort = () => reject(signal.reason);
      deliver = (o) => {
        signal.removeEventListener("abort", onAbort);
        if (o.ok) resolve(o.value);
        else reject(o.error);
      };
      if (outcome !== undefined) deliver(outcome);
      else if (signal.aborted) reject(signal.reason);
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  });
  return d;
}

export interface ScriptedUpstream extends UpstreamClient {
  /** Queues replies for the next calls of `method`, in order. */
  script(method: UpstreamMethod, ...replies: Reply[]): void;
  /** Queues replies for calls of `method` to `provider` alone; taken before the shared queue. */
  scriptFor(provider: string, method: UpstreamMethod, ...replies: Reply[]): void;
  /** The reply for calls of `method` once its script is used up (instead of failing them). */
  otherwise(method: UpstreamMethod, reply: Reply | undefined): void;
  /** Every call of `method` so far, in order. */
  calls<M extends UpstreamMethod>(method: M): readonly RecordedCall<M>[];
  count(method?: UpstreamMethod): number;
  /** Calls that found no scripted reply (they were rejected): should stay empty. */
  readonly unscripted: readonly RecordedCall[];
  /** Replies scripted but not taken yet. */
  remaining(method: UpstreamMethod): number;
}

export function createScriptedUpstream(): ScriptedUpstream {
  const queues: Record<UpstreamMethod, Reply[]> = {
    clientCredentials: [],
    refresh: [],
    revoke: [],
  };
  const byProvider = new Map<string, Reply[]>();
  const providerQueue = (provider: string, method: UpstreamMethod) => {
    const id = `${method} ${provider}`;
    let q = byProvider.get(id);
    if (q === undefined) {
      q = [];
      byProvider.set(id, q);
    }
    return q;
  };
  const fallback: Partial<Record<UpstreamMethod, Reply>> = {};
  const log: RecordedCall[] = [];
  const unscripted: RecordedCall[] = [];

  const call = async <M extends UpstreamMethod>(
    method: M,
    provider: string,
    request: RequestOf[M],
  ): Promise<UpstreamTokenResponse | undefined> => {
    const rec: RecordedCall<M> = { method, provider, request, signal: request.signal };
    log.push(rec);
    const reply =
      providerQueue(provider, method).shift() ?? queues[method].shift() ?? fallback[method];
    if (reply === undefined) {
      unscripted.push(rec);
      throw new Error(`unscripted upstream ${method} call #${count(method)} for "${provider}"`);
    }
    switch (reply.kind) {
      case "ok":
        return reply.response;
      case "error":
        throw reply.error;
      case "deferred":
        return waiters.get(reply)!(rec);
    }
  };

  const count = (method?: UpstreamMethod) =>
    method === undefined ? log.length : log.filter((c) => c.method === method).length;

  const tokenResponse = (method: UpstreamMethod, r: UpstreamTokenResponse | undefined) => {
    if (r === undefined) throw new Error(`the scripted ${method} reply has no tokens`);
    return r;
  };

  return {
    async clientCredentials(provider, req) {
      return tokenResponse("clientCredentials", await call("clientCredentials", provider, req));
    },
    async refresh(provider, req) {
      return tokenResponse("refresh", await call("refresh", provider, req));
    },
    async revoke(provider, req) {
      await call("revoke", provider, req);
    },
    script(method, ...replies) {
      queues[method].push(...replies);
    },
    scriptFor(provider, method, ...replies) {
      providerQueue(provider, method).push(...replies);
    },
    otherwise(method, reply) {
      if (reply === undefined) delete fallback[method];
      else fallback[method] = reply;
    },
    calls: <M extends UpstreamMethod>(method: M) =>
      log.filter((c): c is RecordedCall<M> => c.method === method),
    count,
    unscripted,
    remaining(method) {
      let n = queues[method].length;
      for (const [id, q] of byProvider) if (id.startsWith(`${method} `)) n += q.length;
      return n;
    },
  };
}
