// oidc-provider ships no type declarations. This covers only what
// src/dev/local-idp.ts uses; replace it with @types/oidc-provider if the
// project ever takes that package.

declare module "oidc-provider" {
  import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";

  export interface OidcContext {
    readonly route?: string;
    readonly params?: Record<string, unknown>;
    readonly body?: Record<string, unknown>;
    readonly client?: ClientModel;
  }

  export interface KoaContextWithOIDC {
    readonly req: IncomingMessage;
    readonly headers: IncomingHttpHeaders;
    readonly method: string;
    readonly path: string;
    status: number;
    body: unknown;
    type: string;
    readonly oidc?: OidcContext;
  }

  export type Middleware = (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>;

  export interface ClientModel {
    readonly clientId: string;
    readonly clientAuthMethod: string;
    grantTypeAllowed(type: string): boolean;
  }

  export interface BaseTokenModel {
    readonly jti: string;
    readonly clientId: string;
    readonly grantId?: string;
    readonly expiration: number;
    save(): Promise<string>;
  }

  export interface TokenInit {
    accountId: string;
    client: ClientModel;
    grantId: string;
    scope: string;
    gty?: string;
    expiresWithSession?: boolean;
    authTime?: number;
    rotations?: number;
  }

  export interface GrantModel {
    addOIDCScope(scope: string): void;
    addOIDCClaims(claims: readonly string[]): void;
    addResourceScope(indicator: string, scope: string): void;
    save(): Promise<string>;
  }

  export interface InteractionDetails {
    readonly uid: string;
    readonly prompt: {
      readonly name: string;
      readonly details: {
        readonly missingOIDCScope?: readonly string[];
        readonly missingOIDCClaims?: readonly string[];
        readonly missingResourceScopes?: Readonly<Record<string, readonly string[]>>;
      };
    };
    readonly params: Readonly<Record<string, unknown>>;
    readonly session?: { readonly accountId: string };
    readonly grantId?: string;
  }

  export interface AccessTokenModel extends BaseTokenModel {
    readonly accountId: string;
    readonly scope?: string;
    readonly isExpired: boolean;
    resourceServer?: unknown;
  }

  export interface IdTokenModel {
    scope: string;
    issue(opts: { use: "idtoken" }): Promise<string>;
  }

  export interface AdapterPayload {
    readonly [key: string]: unknown;
    readonly grantId?: string;
    readonly uid?: string;
    readonly userCode?: string;
    consumed?: number;
  }

  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  export type Configuration = Record<string, unknown> & {
    adapter?: new (name: string) => Adapter;
  };

  export class Provider {
    constructor(issuer: string, configuration?: Configuration);
    readonly issuer: string;
    /** Koa's flag: do not print unhandled middleware errors. */
    silent: boolean;
    use(middleware: Middleware): this;
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
    interactionFinished(
      req: IncomingMessage,
      res: ServerResponse,
      result: Record<string, unknown>,
      opts?: { mergeWithLastSubmission?: boolean },
    ): Promise<void>;
    registerGrantType(
      name: string,
      handler: (ctx: KoaContextWithOIDC) => Promise<void>,
      params?: ReadonlySet<string>,
    ): void;
    readonly ResourceServer: new (
      identifier: string,
      info: Record<string, unknown>,
    ) => unknown;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    on(event: string, listener: (...args: never[]) => void): this;
    readonly Client: { find(id: string): Promise<ClientModel | undefined> };
    readonly Grant: {
      new (init: { accountId: string; clientId: string }): GrantModel;
      find(id: string): Promise<GrantModel | undefined>;
    };
    readonly AccessToken: {
      new (init: TokenInit): AccessTokenModel;
      find(value: string): Promise<AccessTokenModel | undefined>;
    };
    readonly ClientCredentials: {
      new (init: { client: ClientModel; scope: string }): AccessTokenModel;
      find(value: string): Promise<AccessTokenModel | undefined>;
    };
    readonly RefreshToken: new (
      init: TokenInit,
    ) => BaseTokenModel;
    readonly IdToken: new (
      claims: Record<string, unknown>,
      opts: { client: ClientModel },
    ) => IdTokenModel;
  }

  export const errors: {
    readonly InvalidTarget: new (description?: string) => Error;
    readonly InvalidGrant: new (description?: string) => Error;
    readonly InvalidRequest: new (description?: string) => Error;
  };
}
