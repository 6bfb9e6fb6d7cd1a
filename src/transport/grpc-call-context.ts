// A Connect HandlerContext for one grpc-js call, built for the hot path: the
// headers, trailers and context values exist only when something reads them,
// one AbortController serves cancel, deadline, shutdown and completion, and
// completion aborts with a shared reason (no error object per call).

import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { authenticatedKey } from "./authentication.ts";
import { authenticatedBy } from "./grpc-authentication.ts";
import { deadlineAtOf } from "./grpc-metadata.ts";

type AnyCall = grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer>;

/** The reason a call's signal carries once the call completed normally. */
const callCompleted = new ConnectError("the call completed", Code.Canceled);
const deadlineExceeded = () => new ConnectError("the operation timed out", Code.DeadlineExceeded);
const cancelledByClient = () => new ConnectError("the client cancelled the call", Code.Canceled);

// Live calls per shutdown signal: one listener per signal, not one per call.
const liveBySignal = new WeakMap<AbortSignal, Set<GrpcCallContext>>();

export class GrpcCallContext implements HandlerContext {
  readonly method: DescMethod;
  readonly service: DescMethod["parent"];
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  /** Called once when the call is aborted by anything but its own completion. */
  onAbort: ((reason: unknown) => void) | undefined;
  readonly #call: AnyCall;
  readonly #controller = new AbortController();
  readonly #deadlineAt: number | undefined;
  readonly #live: Set<GrpcCallContext> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #requestHeader: Headers | undefined;
  #responseHeader: Headers | undefined;
  #responseTrailer: Headers | undefined;
  #values: ContextValues | undefined;

  /** `authenticated`: the listener authenticates calls; the caller goes into the context values. */
  constructor(
    call: AnyCall,
    method: DescMethod,
    shutdownSignal: AbortSignal | undefined,
    authenticated = false,
  ) {
    this.#call = call;
    this.method = method;
    this.service = method.parent;
    if (authenticated) {
      const caller = authenticatedBy(call.metadata);
      if (caller !== undefined) this.#values = createContextValues().set(authenticatedKey, caller);
    }
    const at = deadlineAtOf(call);
    if (at !== undefined) {
      this.#deadlineAt = at;
      this.#timer = setTimeout(() => this.abort(deadlineExceeded()), Math.max(0, at - Date.now()));
    }
    if (shutdownSignal !== undefined) {
      if (shutdownSignal.aborted) {
        queueMicrotask(() => this.abort(shutdownSignal.reason));
      } else {
        let live = liveBySignal.get(shutdownSignal);
        if (live === undefined) {
          const set = new Set<GrpcCallContext>();
          live = set;
          liveBySignal.set(shutdownSignal, set);
          shutdownSignal.addEventListener(
            "abort",
            () => {
              for (const c of [...set]) c.abort(shutdownSignal.reason);
            },
            { once: true },
          );
        }
        live.add(this);
        this.#live = live;
      }
    }
  }

  get url(): string {
    return `http://${this.#call.getHost()}${this.#call.getPath()}`;
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  timeoutMs(): number | undefined {
    return this.#deadlineAt === undefined ? undefined : this.#deadlineAt - Date.now();
  }

  /** Metadata as HTTP headers: binary (-bin) values base64, as they are on the wire. */
  get requestHeader(): Headers {
    if (this.#requestHeader === undefined) {
      const h = new Headers();
      for (const [k, v] of Object.entries(this.#call.metadata.toHttp2Headers())) {
        for (const value of Array.isArray(v) ? v : [v]) {
          if (value !== undefined) h.append(k, String(value));
        }
      }
      this.#requestHeader = h;
    }
    return this.#requestHeader;
  }

  get responseHeader(): Headers {
    this.#responseHeader ??= new Headers();
    return this.#responseHeader;
  }

  get responseTrailer(): Headers {
    this.#responseTrailer ??= new Headers();
    return this.#responseTrailer;
  }

  get values(): ContextValues {
    this.#values ??= createContextValues();
    return this.#values;
  }

  /** The response headers if anything set them, without creating them. */
  peekResponseHeader(): Headers | undefined {
    return this.#responseHeader;
  }

  peekResponseTrailer(): Headers | undefined {
    return this.#responseTrailer;
  }

  /**
   * Ends the call's signal when grpc-js says the call was cancelled: by its
   * client, or by grpc-js's own deadline timer, which runs just before ours
   * (a client's cancel within a millisecond of its deadline counts as the deadline).
   */
  cancelled(): void {
    const late = this.#deadlineAt !== undefined && Date.now() >= this.#deadlineAt - 1;
    this.abort(late ? deadlineExceeded() : cancelledByClient());
  }

  /** Ends the call's signal; without a reason, as a normal completion. */
  abort(reason?: unknown): void {
    if (this.#controller.signal.aborted) return;
    clearTimeout(this.#timer);
    this.#live?.delete(this);
    this.#controller.abort(reason ?? callCompleted);
    if (reason !== undefined) this.onAbort?.(reason);
  }
}
