// The stack the tests run against: the one `run-against-stack` started with `assay dev up`
// (its state directory in ASSAY_TEST_STATE_DIR), and what the tests do to it.
import { execFile, spawn } from "node:child_process";
import { randomUUID, sign } from "node:crypto";
import { openSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AssayClient, type AssayClientOptions } from "@assay/client";
import { ArchiveService } from "@assay/client/gen/assay/archive/v1/archive_service_pb.js";

const run = promisify(execFile);

/** The repository's root (dist/test → clients/node → the repo). */
export const ROOT = resolve(import.meta.dirname, "..", "..", "..", "..");
export const VENV_BIN = process.env.ASSAY_VENV_BIN ?? join(ROOT, ".venv", "bin");

/** What `assay dev up --json` printed (and keeps in stack.json). */
export interface StackInfo {
  assessment: string;
  archive: string;
  notifier: string;
  token: string;
  state_dir: string;
  nats_url: string;
  pids: Record<string, number>;
  metrics: Record<string, string>;
}

export function stateDir(): string {
  const dir = process.env.ASSAY_TEST_STATE_DIR;
  if (!dir) {
    throw new Error("ASSAY_TEST_STATE_DIR is unset: run the tests with `make test-node`");
  }
  return dir;
}

export function stack(): StackInfo {
  return JSON.parse(readFileSync(join(stateDir(), "stack.json"), "utf8")) as StackInfo;
}

/** A fresh directory inside the stack's: removed with it after a run that passed. */
export function scratch(): Promise<string> {
  return mkdtemp(join(stateDir(), "scratch-"));
}

/** A user no other test uses. */
export function newUser(prefix = "node"): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/**
 * A user token signed by the stack's issuer, as `assay token mint --role user` makes it
 * (made here: a CLI start per token would cost seconds on a loaded machine).
 */
export async function userToken(user: string): Promise<string> {
  const issuer = join(stateDir(), "issuer");
  const jwks = JSON.parse(await readFile(join(issuer, "jwks.json"), "utf8")) as { keys: { kid: string; alg: string }[] };
  const key = jwks.keys[0];
  if (key?.alg !== "ES256") {
    throw new Error(`the stack signs with ${key?.alg}; these tests mint ES256 only`);
  }
  const operator = JSON.parse(Buffer.from(stack().token.split(".")[1] ?? "", "base64url").toString()) as {
    iss: string;
    aud: string;
  };
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: operator.iss, aud: operator.aud, sub: user, iat: now, exp: now + 3600, roles: ["user"] };
  const encode = (part: object): string => Buffer.from(JSON.stringify(part)).toString("base64url");
  const signed = `${encode({ alg: "ES256", kid: key.kid, typ: "JWT" })}.${encode(claims)}`;
  const pem = await readFile(join(issuer, "signing-key.pem"), "utf8");
  const signature = sign("sha256", Buffer.from(signed), { key: pem, dsaEncoding: "ieee-p1363" });
  return `${signed}.${signature.toString("base64url")}`;
}

/** Credit a user's tokens, as an operator (ArchiveService.GrantTokens). */
export async function fund(user: string, amount: number): Promise<void> {
  const info = stack();
  const transport = createGrpcTransport({
    baseUrl: `http://${info.archive}`,
    interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${info.token}`), next(req))],
  });
  await createClient(ArchiveService, transport).grantTokens(
    { userId: user, amount: BigInt(amount), reason: "node client tests" },
    { timeoutMs: 30_000 },
  );
}

/** A client of the stack for a user (optionally through another notifier address). */
export async function clientFor(user: string, options: Partial<AssayClientOptions> = {}): Promise<AssayClient> {
  const info = stack();
  return new AssayClient({
    assessmentAddr: info.assessment,
    notifierAddr: info.notifier,
    token: await userToken(user),
    ...options,
  });
}

/** The assessment service's refused submissions (its Prometheus counter). */
export async function refusedSubmissions(): Promise<number> {
  const text = await (await fetch(stack().metrics.assessment ?? "")).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("assay_assessment_submissions_total{") && line.includes('outcome="refused"')) {
      total += Number(line.split(" ").at(-1));
    }
  }
  return total;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z"; // a zombie has exited
  } catch {
    return false;
  }
}

/**
 * Stop the stack's archive (SIGTERM: a graceful stop) and wait until it is gone; the
 * returned function starts it again, as the same command with the same environment, and
 * records the new process in stack.json (so `assay dev down` stops it).
 */
export async function stopArchive(): Promise<() => Promise<void>> {
  const info = stack();
  const pid = info.pids.archive;
  if (pid === undefined) {
    throw new Error("the stack records no archive");
  }
  const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").filter(Boolean);
  const env = Object.fromEntries(
    (await readFile(`/proc/${pid}/environ`, "utf8"))
      .split("\0")
      .filter(Boolean)
      .map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
  );
  process.kill(pid, "SIGTERM");
  while (alive(pid)) {
    await delay(50);
  }
  return async () => {
    const log = openSync(join(info.state_dir, "logs", "archive.log"), "a");
    const [command, ...args] = argv as [string, ...string[]];
    const child = spawn(command, args, { env, detached: true, stdio: ["ignore", log, log] });
    child.unref();
    const now = stack();
    now.pids.archive = child.pid ?? 0;
    writeFileSync(join(info.state_dir, "stack.json"), JSON.stringify(now, null, 2));
  };
}

/** Drop every event the notifier could replay (the JetStream stream, purged). */
export async function purgeEvents(): Promise<void> {
  const script = [
    "import asyncio, sys, nats",
    "async def main():",
    "    nc = await nats.connect(sys.argv[1])",
    "    await nc.jetstream().purge_stream('ASSAY_EVENTS')",
    "    await nc.close()",
    "asyncio.run(main())",
  ].join("\n");
  await run(join(VENV_BIN, "python"), ["-c", script, stack().nats_url]);
}

/** Poll `check` until it holds, or fail after `withinMs`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, withinMs: number, everyMs = 100): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`not true within ${withinMs} ms`);
    }
    await delay(everyMs);
  }
}
