/**
 * Where the bearer token comes from: a string, a file read again whenever it changes (a
 * projected service-account token the kubelet rotates), or any function; and the interceptor
 * that sends it on every call.
 */
import { readFile, stat } from "node:fs/promises";
import type { Interceptor } from "@connectrpc/connect";

/**
 * A token itself (a string), a file holding one (`{ file: path }` or a `file:` URL, read
 * again when it changes), or a function returning one (sync or async).
 */
export type TokenSource = string | URL | { readonly file: string } | (() => string | Promise<string>);

/** A token read from a file, read again whenever the file changes (by mtime and size). */
export class FileToken {
  private seen = "";
  private token = "";

  constructor(readonly path: string | URL) {}

  /** The token, as the file holds it now. */
  async get(): Promise<string> {
    const info = await stat(this.path, { bigint: true });
    const key = `${info.mtimeNs}:${info.size}`;
    if (key !== this.seen) {
      this.token = (await readFile(this.path, "utf8")).trim();
      this.seen = key;
    }
    return this.token;
  }
}

/** A function for any token source. */
export function tokenGetter(source: TokenSource): () => Promise<string> {
  if (typeof source === "string") {
    return () => Promise.resolve(source);
  }
  if (typeof source === "function") {
    return async () => source();
  }
  const file = new FileToken(source instanceof URL ? source : source.file);
  return () => file.get();
}

/** An interceptor that sends `authorization: Bearer <token>` on every call. */
export function bearerInterceptor(source: TokenSource): Interceptor {
  const token = tokenGetter(source);
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${await token()}`);
    return next(req);
  };
}
