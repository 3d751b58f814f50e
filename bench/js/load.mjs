// Closed-loop HTTP load: `conns` keep-alive connections, each one request in flight.
//
// Usage: node load.mjs '<json config>'; prints one JSON line {"result": {...}}.
// Every request is built before the clock starts, so the loop costs one
// socket write and one small parse per request. In "yjs" mode each connection
// owns a Y.Doc with its own client id and sends that doc's updates in order,
// so the server receives every client's updates causally ordered.

import * as Y from "yjs";
import { Connection, buildRequest, now, percentile } from "./http1.mjs";

const cfg = JSON.parse(process.argv[2]);
const {
	host = "127.0.0.1",
	port,
	conns = 50,
	perConn = 2000,
	durationMs = 5000,
	warmupMs = 500,
	method = "PUT",
	path = "/bench",
	mode = "patch", // patch | put-keys | yjs
	fields = 1,
	token = null,
	peers = false, // each connection tags its writes with a Braid Peer header of its own
} = cfg;

function bodiesFor(c) {
	const out = [];
	if (mode === "yjs") {
		const doc = new Y.Doc();
		doc.clientID = 100000 + c;
		const map = doc.getMap("data");
		doc.on("update", (update) => out.push(update));
		for (let n = 0; n < perConn; n++) map.set(fields > 1 ? `c${c}_${n % fields}` : `c${c}`, n);
		return out;
	}
	for (let n = 0; n < perConn; n++) {
		out.push(mode === "put-keys" ? `{"v":${n}}` : `{"c${c}":${n}}`);
	}
	return out;
}

function requestsFor(c) {
	const headers = { "Content-Type": contentType() };
	if (token) headers.Authorization = `Bearer ${token}`;
	if (peers) headers.Peer = `load-${c}`;
	return bodiesFor(c).map((body, n) =>
		buildRequest(method, path.replaceAll("{c}", String(c)).replaceAll("{n}", String(n)), headers, body),
	);
}

function contentType() {
	if (mode === "yjs") return "application/octet-stream";
	return method === "PATCH" ? "application/merge-patch+json" : "application/json";
}

async function main() {
	const requests = [];
	for (let c = 0; c < conns; c++) requests.push(requestsFor(c));
	const connections = await Promise.all(
		Array.from({ length: conns }, () => new Connection(host, port).open()),
	);
	const statuses = {};
	const acked = new Array(conns).fill(0); // per connection: 2xx answers, all in order
	const latencies = [];
	let measured = 0;
	let lastDone = 0;
	const cpu0 = process.cpuUsage();
	const start = now();
	const warmEnd = start + warmupMs;
	const deadline = start + durationMs;

	async function loop(c) {
		const conn = connections[c];
		for (const bytes of requests[c]) {
			const t0 = now();
			if (t0 >= deadline) return;
			let status;
			try {
				status = await conn.send(bytes);
			} catch (err) {
				statuses.error = (statuses.error ?? 0) + 1;
				return;
			}
			const t1 = now();
			statuses[status] = (statuses[status] ?? 0) + 1;
			if (status < 300) acked[c]++;
			if (t0 >= warmEnd) {
				measured++;
				latencies.push(t1 - t0);
				lastDone = t1;
			}
			if (status >= 300) return; // later updates of this client would depend on this one
		}
	}

	await Promise.all(connections.map((_, c) => loop(c)));
	const cpu = process.cpuUsage(cpu0);
	for (const conn of connections) conn.close();
	latencies.sort((a, b) => a - b);
	const elapsed = measured ? (lastDone - warmEnd) / 1000 : 0;
	const result = {
		requests: measured,
		elapsed_s: elapsed,
		rate: elapsed > 0 ? measured / elapsed : 0,
		statuses,
		acked,
		p50_ms: percentile(latencies, 0.5),
		p99_ms: percentile(latencies, 0.99),
		client_cpu_s: (cpu.user + cpu.system) / 1e6,
		process_cpu_s: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
		wall_s: (now() - start) / 1000,
	};
	process.stdout.write(`${JSON.stringify({ result })}\n`);
}

main().catch((err) => {
	process.stdout.write(`${JSON.stringify({ error: String(err?.stack ?? err) })}\n`);
	process.exit(1);
});
