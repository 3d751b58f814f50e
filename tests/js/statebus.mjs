// Test harness for the Node suites: real statebus nodes in child processes,
// small HTTP helpers, and waiting on conditions (never on fixed sleeps).
//
// A node is `python -m statebus serve --port 0 --data <tmpdir>` run with the
// Python in $STATEBUS_PYTHON (default: the Makefile's .venv/bin/python); its
// URL comes from DATA/node.json, written once it listens.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const PYTHON = process.env.STATEBUS_PYTHON || path.join(ROOT, '.venv', 'bin', 'python')
const START_MS = 30_000

export const b64url = (bytes) => Buffer.from(bytes).toString('base64url')
export const b64decode = (text) => new Uint8Array(Buffer.from(text, 'base64'))

// Resolve when `check()` holds; re-checked whenever one of `emitters` emits
// `event` (a Y.Doc's 'update', say), failing after `ms`.
export function until (check, { emitters = [], event = 'update', ms = 10_000, what = 'condition' } = {}) {
  return new Promise((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer)
      for (const e of emitters) e.off(event, test)
    }
    const test = () => {
      let ok
      try {
        ok = check()
      } catch (err) {
        stop()
        reject(err)
        return
      }
      if (ok) {
        stop()
        resolve()
      }
    }
    const timer = setTimeout(() => {
      stop()
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`))
    }, ms)
    for (const e of emitters) e.on(event, test)
    test()
  })
}

// A promise that settles on the first of `promise` and a timeout.
export function within (promise, ms, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// A queue of values pushed by callbacks and awaited by the test, one by one.
export class Inbox {
  constructor () {
    this.items = []
    this.waiters = []
  }

  push (item) {
    const waiter = this.waiters.shift()
    if (waiter) waiter(item)
    else this.items.push(item)
  }

  next (ms = 10_000, what = 'the next item') {
    if (this.items.length) return Promise.resolve(this.items.shift())
    return within(new Promise((resolve) => this.waiters.push(resolve)), ms, what)
  }
}

export class StatebusNode {
  constructor (dataDir, port = 0) {
    this.dataDir = dataDir
    this.port = port
    this.child = null
    this.url = ''
    this.token = ''
  }

  // A node on a fresh data directory; `stop()` ends it and `remove()` deletes the directory.
  static async start () {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'statebus-js-'))
    const node = new StatebusNode(dataDir)
    await node.launch()
    return node
  }

  async launch () {
    const child = spawn(
      PYTHON,
      ['-m', 'statebus', 'serve', '--host', '127.0.0.1', '--port', String(this.port),
        '--data', this.dataDir, '--log-level', 'warning'],
      {
        cwd: ROOT,
        env: { ...process.env, PYTHONPATH: [ROOT, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter) },
        stdio: ['ignore', 'pipe', 'pipe']
      }
    )
    this.child = child
    // Never leave a node behind, even if this test process dies first.
    const reap = () => child.kill('SIGKILL')
    process.once('exit', reap)
    child.once('exit', () => process.off('exit', reap))
    let output = ''
    child.stderr.on('data', (chunk) => { output += chunk })
    const listening = new Promise((resolve, reject) => {
      child.stdout.on('data', (chunk) => {
        output += chunk
        if (output.includes('listening on')) resolve()
      })
      child.once('exit', (code) => reject(new Error(`the node exited (${code}) before listening:\n${output}`)))
      child.once('error', reject)
    })
    await within(listening, START_MS, `the node at ${this.dataDir} to listen`)
    const address = JSON.parse(await fs.readFile(path.join(this.dataDir, 'node.json'), 'utf8'))
    this.url = address.url
    this.port = Number(new URL(this.url).port)
    this.token = (await fs.readFile(path.join(this.dataDir, 'owner.token'), 'utf8')).trim()
  }

  async stop () {
    const child = this.child
    this.child = null
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    await within(exited, 15_000, 'the node to stop')
  }

  // Stop and start again on the same port and data, as a restarted server.
  async restart () {
    await this.stop()
    await this.launch()
  }

  async remove () {
    await this.stop()
    await fs.rm(this.dataDir, { recursive: true, force: true })
  }

  headers (extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra }
  }

  async request (key, { method = 'GET', headers = {}, body } = {}) {
    return fetch(this.url + key, { method, headers: this.headers(headers), body })
  }

  async json (key) {
    const res = await this.request(key, { headers: { Accept: 'application/json' } })
    if (!res.ok) throw new Error(`GET ${key}: ${res.status} ${await res.text()}`)
    return res.json()
  }

  // The key's Yjs state as one update, or only what state vector `since` lacks.
  async state (key, since) {
    const query = since ? `?since=${b64url(since)}` : ''
    const res = await this.request(key + query, { headers: { Accept: 'application/octet-stream' } })
    if (!res.ok) throw new Error(`GET ${key} (binary): ${res.status} ${await res.text()}`)
    return new Uint8Array(await res.arrayBuffer())
  }

  async write (key, method, type, body, headers = {}) {
    const res = await this.request(key, { method, headers: { 'Content-Type': type, ...headers }, body })
    if (!res.ok) throw new Error(`${method} ${key}: ${res.status} ${await res.text()}`)
    return res.json()
  }

  putJSON (key, value, headers) {
    return this.write(key, 'PUT', 'application/json', JSON.stringify(value), headers)
  }

  patch (key, value) {
    return this.write(key, 'PATCH', 'application/merge-patch+json', JSON.stringify(value))
  }

  putUpdate (key, update) {
    return this.write(key, 'PUT', 'application/octet-stream', update)
  }

  // Start a Python client script from tests/js with this node's URL, token and
  // `args`, talking in lines: `expect(word)` waits for it to print `word`,
  // `send(word)` writes a line to its stdin, and `result()` is the JSON line
  // it prints last, once it exited.
  python (script, ...args) {
    const child = spawn(PYTHON, [path.join(ROOT, 'tests', 'js', script), this.url, this.token, ...args], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    const lines = new Inbox()
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      const parts = stdout.split('\n')
      stdout = parts.pop()
      for (const line of parts) lines.push(line)
    })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    const exited = once(child, 'exit').then(([code]) => {
      if (code !== 0) throw new Error(`python ${script} exited ${code}:\n${stderr}`)
    })
    exited.catch(() => {}) // reported by whoever waits for a line
    const line = (what) => Promise.race([
      lines.next(60_000, `python ${script}: ${what}`),
      exited.then(() => { throw new Error(`python ${script} ended before ${what}`) })
    ])
    return {
      expect: async (word) => assert.equal(await line(word), word),
      send: (word) => child.stdin.write(`${word}\n`),
      result: async () => {
        const text = await line('its result')
        await within(exited, 15_000, `python ${script} to exit`)
        return JSON.parse(text)
      }
    }
  }
}
