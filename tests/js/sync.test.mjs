// Yjs over SSE: Node clients subscribe with the `eventsource` package and apply
// each event's `update`; two of them and a Python client edit one key at the
// same time, and all end with the same state, byte for byte.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { EventSource } from 'eventsource'
import * as Y from 'yjs'
import { Inbox, StatebusNode, b64decode, until } from './statebus.mjs'

const REMOTE = 'node' // the transaction origin of what came from the node
const ROUNDS = 25

let node
before(async () => { node = await StatebusNode.start() })
after(async () => { await node?.remove() })

// A Yjs client that follows a key over SSE and PUTs each local transaction.
class SyncedClient {
  constructor (key) {
    this.key = key
    this.doc = new Y.Doc()
    this.events = new Inbox()
    this.sending = Promise.resolve()
    this.doc.on('update', (update, origin) => {
      if (origin === REMOTE) return
      this.sending = this.sending.then(() => node.putUpdate(this.key, update))
    })
  }

  async connect () {
    this.source = new EventSource(node.url + this.key, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...node.headers() } })
    })
    this.source.onmessage = (message) => {
      const event = JSON.parse(message.data)
      Y.applyUpdate(this.doc, b64decode(event.update), REMOTE)
      this.events.push(event)
    }
    return this.events.next(10_000, `the first event of ${this.key}`)
  }

  close () {
    this.source?.close()
  }

  get data () {
    return this.doc.getMap('data')
  }
}

// Where a token may go: the start, or right after a token ("[...]"), so that
// no edit lands inside another and every one can be found at the end. (An
// index between the halves of a surrogate pair would also be unsafe: Yjs
// replaces a split pair's halves with U+FFFD and the node's Yjs engine, yrs,
// does not; tests/test_values_yjs.py tracks that upstream bug.)
function slot (text, n) {
  const ends = [0]
  const str = text.toString()
  for (let i = str.indexOf(']'); i >= 0; i = str.indexOf(']', i + 1)) ends.push(i + 1)
  return ends[n % ends.length]
}

const sameState = (a, b) => Buffer.compare(Buffer.from(Y.encodeStateVector(a)), Buffer.from(Y.encodeStateVector(b))) === 0

describe('Yjs clients over SSE', () => {
  test('the first event carries the current state, then each change its update', async () => {
    await node.putJSON('/sse/first', { a: 1 })
    const client = new SyncedClient('/sse/first')
    try {
      const first = await client.connect()
      assert.deepEqual(first.value, { a: 1 })
      assert.deepEqual(client.data.toJSON(), { a: 1 })
      await node.patch('/sse/first', { b: [1, 2] })
      const change = await client.events.next()
      assert.deepEqual(change.value, { a: 1, b: [1, 2] })
      assert.deepEqual(client.data.toJSON(), change.value)
    } finally {
      client.close()
    }
  })

  test('two Node clients and a Python client editing one key converge byte for byte', async () => {
    const key = '/sse/shared'
    const alice = new SyncedClient(key)
    const bob = new SyncedClient(key)
    try {
      alice.doc.transact(() => {
        alice.data.set('text', new Y.Text('[shared text]'))
        alice.data.set('list', new Y.Array())
        alice.data.set('map', new Y.Map())
      })
      await alice.sending
      await alice.connect()
      await bob.connect()
      assert.equal(bob.data.get('text').toString(), '[shared text]')

      // Everyone at once: the Python client runs while the Node clients type.
      const python = node.python('py_client.py', key, String(ROUNDS))
      await python.expect('ready')
      python.send('go')
      const type = async (client, name, edit) => {
        for (let i = 0; i < ROUNDS; i++) {
          client.doc.transact(() => edit(client.data, i))
          await new Promise((resolve) => setImmediate(resolve)) // let SSE events in between
        }
        await client.sending
      }
      await Promise.all([
        type(alice, 'alice', (data, i) => {
          const text = data.get('text')
          text.insert(slot(text, i * 7), `[a${i}😀]`)
          data.get('list').push([`alice${i}`])
          data.get('map').set('alice', i)
        }),
        type(bob, 'bob', (data, i) => {
          const text = data.get('text')
          text.insert(text.length, `[b${i}𝄞]`)
          if (i % 3 === 2) { // take back the previous round's insertion
            const mine = `[b${i - 1}𝄞]`
            text.delete(text.toString().indexOf(mine), mine.length)
          }
          data.get('list').insert(0, [{ bob: i }])
          const nested = data.get('map').get('bob') ?? new Y.Map()
          if (!nested.parent) data.get('map').set('bob', nested)
          nested.set(`k${i % 5}`, i)
        })
      ])
      await python.expect('written')

      // Sync: both Node clients reach the node's state through their SSE streams.
      const server = new Y.Doc()
      Y.applyUpdate(server, await node.state(key))
      await until(() => sameState(alice.doc, server) && sameState(bob.doc, server), {
        emitters: [alice.doc, bob.doc],
        what: 'both Node clients to reach the node state'
      })
      python.send('sync') // the Python client catches up with ?since=
      const py = await python.result()

      const update = Y.encodeStateAsUpdate(server)
      assert.deepEqual(Y.encodeStateAsUpdate(alice.doc), update)
      assert.deepEqual(Y.encodeStateAsUpdate(bob.doc), update)
      assert.deepEqual(Y.encodeStateVector(alice.doc), Y.encodeStateVector(bob.doc))
      assert.deepEqual(Y.decodeStateVector(b64decode(py.state_vector)), Y.decodeStateVector(Y.encodeStateVector(server)))

      const json = await node.json(key)
      assert.deepEqual(alice.data.toJSON(), json)
      assert.deepEqual(bob.data.toJSON(), json)
      assert.deepEqual(py.json, json)
      assert.deepEqual(server.getMap('data').toJSON(), json)

      // Every edit survived.
      assert.equal(json.list.length, 3 * ROUNDS)
      assert.deepEqual(json.counters, { py: ROUNDS })
      assert.equal(json.map.alice, ROUNDS - 1)
      for (let i = 0; i < ROUNDS; i++) {
        assert.ok(json.text.includes(`[a${i}😀]`), `alice's edit ${i}`)
        assert.ok(json.text.includes(`[py${i}🐍]`), `python's edit ${i}`)
        assert.equal(json.text.includes(`[b${i}𝄞]`), i % 3 !== 1, `bob's edit ${i}`)
      }
    } finally {
      alice.close()
      bob.close()
    }
  })

  test('a client that was away catches up with ?since=<state vector>', async () => {
    const key = '/sse/away'
    const online = new SyncedClient(key)
    const away = new SyncedClient(key)
    try {
      online.doc.transact(() => online.data.set('text', new Y.Text('x'.repeat(5000))))
      await online.sending
      await away.connect()
      away.close()
      for (let i = 0; i < 5; i++) online.doc.transact(() => online.data.get('text').insert(0, `${i}`))
      await online.sending
      const missing = await node.state(key, Y.encodeStateVector(away.doc))
      assert.ok(missing.length < 200, `only the missing part (${missing.length} bytes)`)
      Y.applyUpdate(away.doc, missing, REMOTE)
      assert.deepEqual(Y.encodeStateAsUpdate(away.doc), Y.encodeStateAsUpdate(online.doc))
      assert.deepEqual(away.data.toJSON(), await node.json(key))
    } finally {
      online.close()
      away.close()
    }
  })
})
