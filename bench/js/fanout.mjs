// Fan-out load: one writer, `subs` subscribers of one key, all in this process.
//
// Usage: node fanout.mjs '<json config>'. Prints {"ready": {...}} once every
// subscriber holds the key and the warm-up events arrived, waits for a line
// "go" on stdin, measures, prints {"result": {...}} and exits.
//
// Every subscriber is equally cheap for every server: it never parses the
// stream, it finds the writer's marker `#k0001234#` in the raw received bytes
// with indexOf (raw `net` sockets for SSE, `ws` messages for Hocuspocus) and
// stamps the receipt with the clock the writer stamped the send with. The
// writer keeps at most `window` events outstanding (sent, not yet received by
// every subscriber), so the server always has work queued and latency stays
// bounded.

import net from "node:net";
import readline from "node:readline";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";
import WebSocket from "ws";
import * as Y from "yjs";
import { Connection, buildRequest, now, percentile } from "./http1.mjs";

const cfg = JSON.parse(process.argv[2]);
const {
	kind, // "sse" | "hocuspocus"
	host = "127.0.0.1",
	port,
	path = "/bench/fanout", // SSE key, or Hocuspocus document name
	subs = 100,
	token = null,
	writeMethod = "PUT",
	writeContentType = "application/json",
	writeConns = 8,
	window = 8,
	warmup = 20,
	maxEvents = Math.min(20000, Math.floor(4_000_000 / subs)),
	durationMs = 4000,
	stallMs = 10000,
	connectBatch = 50,
	connectTimeoutMs = 30000,
	hardLimitMs = 180000,
} = cfg;

setTimeout(() => {
	process.stdout.write(`${JSON.stringify({ error: "hard time limit reached" })}\n`);
	process.exit(3);
}, hardLimitMs).unref();

const MARK = Buffer.from("#k");
const HASH = 0x23;
const MARK_LEN = 10; // "#k" + 7 digits + "#"
const limitEvents = warmup + maxEvents;

// Per-event and per-subscriber bookkeeping, preallocated.
const sendTime = new Float64Array(limitEvents);
const doneCount = new Int32Array(limitEvents); // subscribers that received (or lost) event e
const seen = new Uint8Array(limitEvents * subs); // seen[e * subs + s]
const low = new Int32Array(subs); // every event below low[s] is accounted for at s
const samples = new Float64Array(Math.max(1, maxEvents * subs));
let nSamples = 0;
let deliveries = 0;
let sent = 0;
let completed = 0;
let lastComplete = 0;
let measuring = false;
let deadline = Number.POSITIVE_INFINITY;
let target = warmup;
let writeErrors = 0;

function marker(k) {
	return `#k${String(k).padStart(7, "0")}#`;
}

function credit(e, t) {
	if (++doneCount[e] === subs) {
		completed++;
		lastComplete = t;
	}
}

// Called for each marker a subscriber finds. Concurrent writers may reach the
// server out of order, so an event may arrive after a later one; an event still
// missing once the subscriber has seen one `window` events later is written off
// (it is counted missing, and the writer may go on).
function record(s, k, t) {
	if (k >= sent) return;
	const idx = k * subs + s;
	if (seen[idx]) return;
	seen[idx] = 1;
	if (k >= low[s]) credit(k, t);
	if (k >= warmup) {
		deliveries++;
		samples[nSamples++] = t - sendTime[k];
	}
	while (low[s] <= k - window) {
		if (!seen[low[s] * subs + s]) credit(low[s], t);
		low[s]++;
	}
	schedulePump();
}

// Scans raw bytes for markers; returns the tail to carry if one is cut off.
function scan(s, buf) {
	const t = now();
	let i = buf.indexOf(MARK);
	while (i >= 0) {
		if (i + MARK_LEN > buf.length) return buf.subarray(i);
		if (buf[i + MARK_LEN - 1] === HASH) {
			let k = 0;
			for (let j = i + 2; j < i + MARK_LEN - 1; j++) k = k * 10 + (buf[j] - 48);
			record(s, k, t);
		}
		i = buf.indexOf(MARK, i + MARK_LEN);
	}
	return buf[buf.length - 1] === HASH ? buf.subarray(buf.length - 1) : null;
}

// ---- subscribers -------------------------------------------------------

function openSse(s) {
	return new Promise((resolve, reject) => {
		const socket = net.connect({ host, port, noDelay: true });
		let head = "";
		let ready = false;
		let carry = null;
		const timer = setTimeout(() => reject(new Error(`subscriber ${s}: no first event`)), connectTimeoutMs);
		socket.on("connect", () => {
			let req = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n`;
			if (token) req += `Authorization: Bearer ${token}\r\n`;
			socket.write(`${req}\r\n`);
		});
		socket.on("data", (chunk) => {
			if (!ready) {
				head += chunk.toString("latin1");
				if (!head.startsWith("HTTP/1.1 200")) {
					if (head.includes("\r\n")) reject(new Error(`subscriber ${s}: ${head.split("\r\n")[0]}`));
					return;
				}
				if (!head.includes("data:")) return;
				ready = true;
				clearTimeout(timer);
				resolve(socket);
			}
			const buf = carry ? Buffer.concat([carry, chunk]) : chunk;
			carry = scan(s, buf);
		});
		socket.on("error", (err) => (ready ? null : reject(err)));
	});
}

const EMPTY_SV = Y.encodeStateVector(new Y.Doc());

function hocusMessage(fill) {
	const enc = encoding.createEncoder();
	encoding.writeVarString(enc, path);
	fill(enc);
	return encoding.toUint8Array(enc);
}

// Hocuspocus framing: varString document name, varUint message type
// (0 Sync, 2 Auth, 4 SyncReply, 8 SyncStatus), then the y-protocols payload.
const AUTH = hocusMessage((enc) => {
	encoding.writeVarUint(enc, 2); // MessageType.Auth
	encoding.writeVarUint(enc, 0); // AuthMessageType.Token
	encoding.writeVarString(enc, "bench");
});
function syncStep1(sv) {
	return hocusMessage((enc) => {
		encoding.writeVarUint(enc, 0); // MessageType.Sync
		encoding.writeVarUint(enc, 0); // messageYjsSyncStep1
		encoding.writeVarUint8Array(enc, sv);
	});
}
function updateMessage(update) {
	return hocusMessage((enc) => {
		encoding.writeVarUint(enc, 0); // MessageType.Sync
		encoding.writeVarUint(enc, 2); // messageYjsUpdate
		encoding.writeVarUint8Array(enc, update);
	});
}

function isSyncStep2(data) {
	const dec = decoding.createDecoder(new Uint8Array(data));
	decoding.readVarString(dec);
	const type = decoding.readVarUint(dec);
	return (type === 0 || type === 4) && decoding.readVarUint(dec) === 1;
}

function openWs(s, onMessage) {
	return new Promise((resolve, reject) => {
		const ws = new WebSocket(`ws://${host}:${port}/`, { perMessageDeflate: false });
		let ready = false;
		const timer = setTimeout(() => reject(new Error(`client ${s}: no sync step 2`)), connectTimeoutMs);
		ws.on("open", () => {
			ws.send(AUTH);
			ws.send(syncStep1(EMPTY_SV));
		});
		ws.on("message", (data) => {
			if (!ready) {
				if (!isSyncStep2(data)) return;
				ready = true;
				clearTimeout(timer);
				resolve(ws);
			}
			if (onMessage) onMessage(data);
		});
		ws.on("error", (err) => (ready ? null : reject(err)));
	});
}

async function openSubscribers() {
	const handles = [];
	for (let first = 0; first < subs; first += connectBatch) {
		const batch = [];
		for (let s = first; s < Math.min(subs, first + connectBatch); s++) {
			batch.push(kind === "sse" ? openSse(s) : openWs(s, (data) => scan(s, data)));
		}
		handles.push(...(await Promise.all(batch)));
	}
	return handles;
}

// ---- writers ------------------------------------------------------------

async function sseWriter() {
	const headers = { "Content-Type": writeContentType };
	if (token) headers.Authorization = `Bearer ${token}`;
	const free = await Promise.all(
		Array.from({ length: Math.min(writeConns, window) }, () => new Connection(host, port).open()),
	);
	const all = [...free];
	return {
		canSend: () => free.length > 0,
		send(k) {
			const conn = free.pop();
			const bytes = buildRequest(writeMethod, path, headers, `{"n":"${marker(k)}"}`);
			sendTime[k] = now();
			conn.send(bytes).then(
				(status) => {
					if (status >= 300) writeErrors++;
					free.push(conn);
					schedulePump();
				},
				() => writeErrors++,
			);
		},
		close: () => all.forEach((c) => c.close()),
	};
}

async function hocusWriter() {
	const ws = await openWs(-1, null);
	const doc = new Y.Doc();
	const map = doc.getMap("data");
	let pending = null;
	doc.on("update", (update) => {
		pending = update;
	});
	return {
		canSend: () => true,
		send(k) {
			sendTime[k] = now();
			map.set("n", marker(k));
			ws.send(updateMessage(pending));
		},
		close: () => ws.terminate(),
	};
}

// ---- the loop -----------------------------------------------------------

let writer = null;
let pumpQueued = false;
let onProgress = () => {};

function schedulePump() {
	if (pumpQueued) return;
	pumpQueued = true;
	setImmediate(pump);
}

function pump() {
	pumpQueued = false;
	while (sent - completed < window && sent < target && writer.canSend()) {
		if (measuring && now() >= deadline) {
			target = sent;
			break;
		}
		writer.send(sent++);
	}
	onProgress();
}

function waitAllComplete(limitMs) {
	return new Promise((resolve) => {
		let lastCompleted = completed;
		let lastChange = now();
		const check = () => {
			if (completed !== lastCompleted) {
				lastCompleted = completed;
				lastChange = now();
			}
			if ((sent >= target && completed >= sent) || now() - lastChange > limitMs) {
				clearInterval(timer);
				onProgress = () => {};
				resolve(completed >= sent);
			}
		};
		const timer = setInterval(() => {
			if (measuring && now() >= deadline && target > sent) target = sent;
			check();
		}, 20);
		onProgress = check;
		schedulePump();
	});
}

function waitForGo() {
	return new Promise((resolve) => {
		const rl = readline.createInterface({ input: process.stdin });
		rl.on("close", () => process.exit(2)); // the harness went away
		rl.on("line", (line) => {
			if (line.trim() === "go") {
				rl.removeAllListeners("close");
				rl.close();
				resolve();
			}
		});
	});
}

async function main() {
	const t0 = now();
	const handles = await openSubscribers();
	writer = kind === "sse" ? await sseWriter() : await hocusWriter();
	if (!(await waitAllComplete(stallMs))) throw new Error("warm-up events did not reach every subscriber");
	const connectS = (now() - t0) / 1000;
	process.stdout.write(`${JSON.stringify({ ready: { subs, connect_s: connectS } })}\n`);
	await waitForGo();

	const cpu0 = process.cpuUsage();
	const start = now();
	deadline = start + durationMs;
	measuring = true;
	target = limitEvents;
	const complete = await waitAllComplete(stallMs);
	const end = completed > warmup ? lastComplete : now();
	const cpu = process.cpuUsage(cpu0);

	const lat = samples.subarray(0, nSamples).sort();
	const elapsed = (end - start) / 1000;
	const events = sent - warmup;
	const result = {
		subs,
		events,
		deliveries,
		expected: events * subs,
		missing: events * subs - deliveries,
		complete,
		write_errors: writeErrors,
		elapsed_s: elapsed,
		deliveries_per_s: elapsed > 0 ? deliveries / elapsed : 0,
		p50_ms: percentile(lat, 0.5),
		p99_ms: percentile(lat, 0.99),
		client_cpu_s: (cpu.user + cpu.system) / 1e6,
	};
	process.stdout.write(`${JSON.stringify({ result })}\n`);
	writer.close();
	for (const h of handles) (kind === "sse" ? h.destroy() : h.terminate());
	process.exit(0);
}

main().catch((err) => {
	process.stdout.write(`${JSON.stringify({ error: String(err?.stack ?? err) })}\n`);
	process.exit(1);
});
