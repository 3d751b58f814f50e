// The Hocuspocus baseline: one plain server, no extensions, no persistence.
//
// Usage: node hocuspocus_server.mjs PORT. Prints "listening" once it accepts.
// Listens through its httpServer directly: Server.listen() hands `address`
// to net's listen(), which only knows `host`, so it would bind every interface.

import { Server } from "@hocuspocus/server";

const port = Number(process.argv[2]);
const server = new Server({ quiet: true, stopOnSignals: false });
server.httpServer.listen({ port, host: "127.0.0.1" }, () => {
	process.stdout.write("listening\n");
});
