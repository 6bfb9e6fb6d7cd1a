// The local IdP's login and consent pages (oidc-provider leaves them to the application): one
// route per step, driven by a browser or by a test's plain HTTP requests.
//
//   GET  /interaction/:uid          what is asked (JSON with accept: application/json, else a form)
//   POST /interaction/:uid/login    accountId=<name>: the user signs in (any name, no password)
//   POST /interaction/:uid/confirm  the user grants what the client asked for
//   POST /interaction/:uid/abort    the user refuses: the client gets access_denied
//
// Everything else goes to oidc-provider.

import type { IncomingMessage, ServerResponse } from "node:http";
import type { Provider } from "oidc-provider";

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const route = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/;

export function withInteractions(provider: Provider, next: Handler): Handler {
  return (req, res) => {
    const m = route.exec(new URL(req.url ?? "/", "http://idp").pathname);
    if (m === null) return next(req, res);
    const action = m[2];
    interact(provider, req, res, action).catch((err: unknown) => {
      if (res.headersSent) return res.end();
      res.writeHead(400, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "interaction_failed", detail: (err as Error).message }));
    });
  };
}

async function interact(
  provider: Provider,
  req: IncomingMessage,
  res: ServerResponse,
  action: string | undefined,
): Promise<void> {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === "GET" && action === undefined) {
    const body = { uid, prompt: prompt.name, client_id: params.client_id, scope: params.scope };
    if ((req.headers.accept ?? "").includes("application/json")) {
      res.writeHead(200, { "content-type": "application/json" });
      return void res.end(JSON.stringify(body));
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    const step = prompt.name === "login" ? "login" : "confirm";
    return void res.end(
      `<!DOCTYPE html><title>local IdP</title><p>${prompt.name} for ${htmlEscape(String(params.client_id))}</p>` +
        `<form method="post" action="/interaction/${uid}/${step}">` +
        (step === "login" ? `<input name="accountId" value="demo-user">` : "") +
        `<button>Continue</button></form>` +
        `<form method="post" action="/interaction/${uid}/abort"><button>Deny</button></form>`,
    );
  }
  if (req.method !== "POST") throw new Error("use POST");
  if (action === "abort") {
    return provider.interactionFinished(
      req,
      res,
      { error: "access_denied", error_description: "End-User aborted interaction" },
      { mergeWithLastSubmission: false },
    );
  }
  if (action === "login") {
    const form = new URLSearchParams(await readBody(req));
    const accountId = form.get("accountId") ?? "";
    if (accountId === "") throw new Error("accountId is required");
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId } },
      { mergeWithLastSubmission: false },
    );
  }
  // confirm: grant the scopes and resources the prompt says are missing.
  const accountId = details.session?.accountId;
  if (accountId === undefined) throw new Error("not signed in");
  const grant =
    details.grantId !== undefined
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: String(params.client_id) });
  if (grant === undefined) throw new Error("grant not found");
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(" "));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(
    req,
    res,
    { consent: { grantId } },
    { mergeWithLastSubmission: true },
  );
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => {
      text += c;
      if (text.length > 65_536) reject(new Error("body too large"));
    });
    req.on("end", () => resolve(text));
    req.on("error", reject);
  });
}

const htmlEscape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
