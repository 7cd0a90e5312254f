// The client over TLS: `tls: { ca, cert, key }` from PEM files, mutual TLS when it has a
// certificate (the server here requires one). The server is a bare HTTP/2 server that answers
// every gRPC call with UNIMPLEMENTED: enough to tell that the TLS handshake held.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createSecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { AssayClient, AssayError, Code } from "@assay/client";
import { scratch } from "./stack.js";

const openssl = (cwd: string, ...args: string[]) => promisify(execFile)("openssl", args, { cwd, timeout: 60_000 });

/** A throwaway CA with a server and a client certificate (as tests/conftest.py's pki). */
async function pki(): Promise<string> {
  const dir = await scratch();
  await openssl(dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
    "-days", "1", "-subj", "/CN=assay-test-ca");
  for (const name of ["server", "client"]) {
    await openssl(dir, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`,
      "-subj", `/CN=${name}`, "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    await openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
      "-out", `${name}.pem`, "-days", "1", "-copy_extensions", "copy");
  }
  return dir;
}

test("mutual TLS", async () => {
  const dir = await pki();
  const pem = (name: string) => readFile(join(dir, name));
  const server = createSecureServer({
    key: await pem("server.key"),
    cert: await pem("server.pem"),
    ca: await pem("ca.pem"),
    requestCert: true,
    rejectUnauthorized: true,
  });
  server.on("error", () => undefined);
  server.on("stream", (stream) => {
    stream.on("error", () => undefined);
    stream.resume();
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": String(Code.Unimplemented), "grpc-message": "nothing here" }));
    stream.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const tls = { ca: await pem("ca.pem"), cert: await pem("client.pem"), key: await pem("client.key") };
    await using mutual = new AssayClient({ assessmentAddr: addr, token: "t", tls });
    assert.equal(await mutual.reachable(), true);
    await assert.rejects(mutual.balance(), (err: unknown) => {
      assert.ok(err instanceof AssayError, String(err));
      assert.equal(err.code, Code.Unimplemented); // TLS held: the server answered
      return true;
    });
    await using anonymous = new AssayClient({ assessmentAddr: addr, token: "t", tls: { ca: tls.ca } });
    const began = Date.now(); // refusals are told at once, not when withinMs has passed
    assert.equal(await anonymous.reachable("assessment", { withinMs: 30_000 }), false); // no client certificate
    await using plain = new AssayClient({ assessmentAddr: addr, token: "t" });
    assert.equal(await plain.reachable("assessment", { withinMs: 30_000 }), false); // plain text to a TLS port
    assert.ok(Date.now() - began < 10_000, `${Date.now() - began} ms`);
  } finally {
    server.close();
  }
});
