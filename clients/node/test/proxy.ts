// A TCP proxy for fault tests: cut() resets every connection through it (a reset link).
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";

export class Proxy {
  port = 0;
  private readonly server: Server;
  private pairs = new Set<[Socket, Socket]>();

  constructor(readonly targetPort: number) {
    this.server = createServer((client) => {
      const upstream = connect(targetPort, "127.0.0.1");
      const pair: [Socket, Socket] = [client, upstream];
      this.pairs.add(pair);
      for (const socket of pair) {
        socket.on("error", () => this.drop(pair)); // a cut, seen from the other side
        socket.on("close", () => this.drop(pair));
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Reset every connection through the proxy now; how many were cut. */
  cut(): number {
    const pairs = [...this.pairs];
    this.pairs = new Set();
    for (const pair of pairs) {
      for (const socket of pair) {
        socket.resetAndDestroy();
      }
    }
    return pairs.length;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private drop(pair: [Socket, Socket]): void {
    if (this.pairs.delete(pair)) {
      for (const socket of pair) {
        socket.destroy();
      }
    }
  }
}
