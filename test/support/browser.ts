// A user's browser at the local IdP, as plain HTTP requests with a cookie jar (tough-cookie):
// it follows the authorization URL, signs in, consents or refuses on the interaction pages
// (src/dev/idp-interactions.ts), and stops at the redirect to the client's redirect URI; or it
// enters a device's user code and approves or refuses it.

import { CookieJar } from "tough-cookie";

export interface Browser {
  /** Logs in at `authorizationUrl`; resolves with the callback URL the IdP sends back to. */
  login(
    authorizationUrl: string,
    opts: { accountId?: string; deny?: boolean; redirectUri: string },
  ): Promise<string>;
  /** Enters the user code of `verificationUriComplete` and logs in (or refuses). */
  approveDevice(
    verificationUriComplete: string,
    opts?: { accountId?: string; deny?: boolean },
  ): Promise<void>;
}

export function createBrowser(): Browser {
  const jar = new CookieJar();

  const request = async (url: string, init: RequestInit = {}): Promise<Response> => {
    const cookie = await jar.getCookieString(url);
    const res = await fetch(url, {
      ...init,
      redirect: "manual",
      headers: { ...(init.headers as Record<string, string>), ...(cookie ? { cookie } : {}) },
    });
    for (const c of res.headers.getSetCookie()) await jar.setCookie(c, url);
    return res;
  };
  const post = (url: string, form: Record<string, string>) =>
    request(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(form).toString(),
    });

  /** Follows redirects, answering each interaction page, until `done` says the URL is the end. */
  const follow = async (
    start: Response,
    base: string,
    opts: { accountId?: string; deny?: boolean },
    done: (url: string) => boolean,
  ): Promise<{ url: string; res: Response }> => {
    let res = start;
    for (let hops = 0; hops < 20; hops++) {
      const location = res.headers.get("location");
      if (location === null) return { url: res.url, res };
      const url = new URL(location, base).href;
      await res.body?.cancel();
      if (done(url)) return { url, res };
      const m = /\/interaction\/([A-Za-z0-9_-]+)$/.exec(new URL(url).pathname);
      if (m === null) {
        res = await request(url);
        continue;
      }
      const page = await request(url, { headers: { accept: "application/json" } });
      const { prompt } = (await page.json()) as { prompt: string };
      const action = opts.deny ? "abort" : prompt === "login" ? "login" : "confirm";
      res = await post(
        new URL(`/interaction/${m[1]}/${action}`, base).href,
        action === "login" ? { accountId: opts.accountId ?? "alice" } : {},
      );
    }
    throw new Error("too many redirects");
  };

  const hidden = (html: string, name: string) =>
    new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? "";

  return {
    async login(authorizationUrl, opts) {
      const first = await request(authorizationUrl);
      const { url } = await follow(first, authorizationUrl, opts, (u) =>
        u.startsWith(opts.redirectUri),
      );
      return url;
    },

    async approveDevice(verificationUriComplete, opts = {}) {
      // The IdP answers with a self-submitting form carrying its xsrf token and the code.
      const form = await (await request(verificationUriComplete)).text();
      const action = new URL("/device", verificationUriComplete).href;
      const confirm = await (
        await post(action, { xsrf: hidden(form, "xsrf"), user_code: hidden(form, "user_code") })
      ).text();
      const fields = { xsrf: hidden(confirm, "xsrf"), user_code: hidden(confirm, "user_code") };
      if (opts.deny) {
        await (await post(action, { ...fields, abort: "yes" })).body?.cancel();
        return;
      }
      const res = await post(action, { ...fields, confirm: "yes" });
      const end = await follow(res, action, opts, () => false);
      const body = await end.res.text();
      if (!body.includes("approved")) throw new Error(`device approval did not finish: ${body}`);
    },
  };
}
