// A keep-alive HTTP/1.1 client on a raw socket, one request in flight.
//
// The load clients must measure the server, not themselves, so this parses
// only what it needs: the status code and where the response ends
// (Content-Length, or the last chunk of a chunked body).

import net from "node:net";

const CRLFCRLF = Buffer.from("\r\n\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");

export function buildRequest(method, path, headers, body) {
	let head = `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
	for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
	const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
	head += `Content-Length: ${payload.length}\r\n\r\n`;
	return Buffer.concat([Buffer.from(head, "latin1"), payload]);
}

function findEnd(buf) {
	// Returns [status, endOffset] once a whole response is in buf, else null.
	const headEnd = buf.indexOf(CRLFCRLF);
	if (headEnd < 0) return null;
	const status = Number(buf.toString("latin1", 9, 12));
	const head = buf.toString("latin1", 0, headEnd).toLowerCase();
	const bodyStart = headEnd + 4;
	const cl = head.indexOf("\r\ncontent-length:");
	if (cl >= 0) {
		const len = Number.parseInt(head.slice(cl + 17, head.indexOf("\r\n", cl + 2) >>> 0), 10);
		return buf.length >= bodyStart + len ? [status, bodyStart + len] : null;
	}
	if (head.includes("\r\ntransfer-encoding: chunked")) {
		const last = buf.indexOf(LAST_CHUNK, bodyStart);
		return last < 0 ? null : [status, last + LAST_CHUNK.length];
	}
	return [status, bodyStart]; // 204, 304 or a body-less answer
}

export class Connection {
	constructor(host, port) {
		this.host = host;
		this.port = port;
		this.socket = null;
		this.buf = Buffer.alloc(0);
		this.pending = null;
	}

	open() {
		return new Promise((resolve, reject) => {
			const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
			socket.once("connect", () => resolve(this));
			socket.once("error", reject);
			socket.on("data", (chunk) => this.onData(chunk));
			socket.on("close", () => {
				if (this.pending) this.pending.reject(new Error("connection closed"));
				this.pending = null;
			});
			this.socket = socket;
		});
	}

	onData(chunk) {
		this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
		const end = findEnd(this.buf);
		if (end === null) return;
		this.buf = this.buf.subarray(end[1]);
		const pending = this.pending;
		this.pending = null;
		if (pending) pending.resolve(end[0]);
	}

	// Sends prebuilt request bytes; resolves to the status code.
	send(bytes) {
		return new Promise((resolve, reject) => {
			this.pending = { resolve, reject };
			this.socket.write(bytes);
		});
	}

	close() {
		if (this.socket) this.socket.destroy();
	}
}

export function now() {
	// A clock shared by every process on this machine, in milliseconds.
	return performance.timeOrigin + performance.now();
}

export function percentile(sorted, q) {
	if (sorted.length === 0) return null;
	const i = Math.min(sorted.length - 1, Math.floor(q * sorted.length));
	return sorted[i];
}
