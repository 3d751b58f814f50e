// The real `braid-http` client against a real node: braid_fetch with
// `subscribe: true` and `retry` gets the current value and each change,
// resumes by Parents after the server restarts, and its PUTs land.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { fetch as braidFetch } from 'braid-http'
import { Inbox, StatebusNode } from './statebus.mjs'

let node
before(async () => { node = await StatebusNode.start() })
after(async () => { await node?.remove() })

// A braid_fetch subscription to `server`, whose updates land in an inbox as
// {version, parents, value}.
async function subscribe (server, key, options = {}) {
  const aborter = new AbortController()
  const updates = new Inbox()
  const sub = { updates, version: null, close: () => aborter.abort() }
  const res = await braidFetch(server.url + key, {
    subscribe: true,
    retry: true,
    // Each (re)connection says where this client is: the node resumes from there.
    parents: () => (sub.version ? [sub.version] : undefined),
    headers: server.headers(),
    signal: aborter.signal,
    ...options
  })
  res.subscribe(
    (update) => {
      sub.version = update.version[0]
      updates.push({ version: update.version, parents: update.parents, value: JSON.parse(update.body_text) })
    },
    (error) => updates.push({ error })
  )
  sub.response = res
  return sub
}

describe('braid-http clients', () => {
  test('a subscription gets the current value, then each change with its parents', async () => {
    const { version } = await node.putJSON('/braid/doc', { n: 0, name: 'Ada 😀' })
    const sub = await subscribe(node, '/braid/doc')
    try {
      assert.equal(sub.response.status, 209)
      assert.equal(sub.response.headers.get('cache-control'), 'no-store')
      const first = await sub.updates.next()
      assert.deepEqual(first, { version: [String(version)], parents: undefined, value: { n: 0, name: 'Ada 😀' } })
      let parents = first.version
      for (let n = 1; n <= 3; n++) {
        const { version } = await node.patch('/braid/doc', { n })
        const update = await sub.updates.next()
        assert.deepEqual(update, { version: [String(version)], parents, value: { n, name: 'Ada 😀' } })
        parents = update.version
      }
      await node.request('/braid/doc', { method: 'DELETE' })
      assert.equal((await sub.updates.next()).value, null)
    } finally {
      sub.close()
    }
  })

  test('heartbeats are granted when asked for', async () => {
    const sub = await subscribe(node, '/braid/beat', { heartbeats: 1 })
    try {
      assert.equal(sub.response.headers.get('heartbeats'), '1s')
      assert.equal((await sub.updates.next()).value, null)
    } finally {
      sub.close()
    }
  })

  test("the client's PUTs land, and a peer is not sent the echo of its own", async () => {
    const mine = await subscribe(node, '/braid/put', { peer: 'peer-1' })
    const other = await subscribe(node, '/braid/put')
    try {
      const start = await mine.updates.next()
      await other.updates.next()
      const put = await braidFetch(node.url + '/braid/put', {
        method: 'PUT',
        version: ['peer-1-v1'],
        parents: start.version,
        peer: 'peer-1',
        headers: node.headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ from: 'braid', list: [1, 2] })
      })
      assert.equal(put.status, 200)
      const version = JSON.parse(put.headers.get('version'))
      assert.deepEqual(await node.json('/braid/put'), { from: 'braid', list: [1, 2] })
      assert.deepEqual(await other.updates.next(), {
        version: [version],
        parents: start.version,
        value: { from: 'braid', list: [1, 2] }
      })
      // The peer's own stream skips its echo: its next update is someone else's.
      const next = await node.patch('/braid/put', { from: 'node' })
      assert.deepEqual(await mine.updates.next(), {
        version: [String(next.version)],
        parents: start.version,
        value: { from: 'node', list: [1, 2] }
      })
    } finally {
      mine.close()
      other.close()
    }
  })

  test('a PUT naming its Parents keeps what changed since (a three-way merge)', async () => {
    await node.putJSON('/braid/merge', { title: 'draft', tags: ['a'] })
    const sub = await subscribe(node, '/braid/merge')
    try {
      const read = await sub.updates.next()
      await node.patch('/braid/merge', { tags: ['a', 'b'] }) // someone else, meanwhile
      const put = await braidFetch(node.url + '/braid/merge', {
        method: 'PUT',
        parents: read.version,
        headers: node.headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ ...read.value, title: 'final' })
      })
      assert.equal(put.status, 200)
      assert.deepEqual(await node.json('/braid/merge'), { title: 'final', tags: ['a', 'b'] })
    } finally {
      sub.close()
    }
  })

  test('after the server restarts, the client reconnects and resumes by Parents', async () => {
    const server = await StatebusNode.start()
    let sub
    try {
      const v1 = (await server.putJSON('/braid/restart', { n: 1 })).version
      sub = await subscribe(server, '/braid/restart')
      assert.deepEqual(await sub.updates.next(), { version: [String(v1)], parents: undefined, value: { n: 1 } })

      await server.restart() // same port, same data; the subscription's connection drops
      const v2 = (await server.putJSON('/braid/restart', { n: 2 })).version
      // Resumed, not restarted: no second copy of v1, just what came after it.
      assert.deepEqual(await sub.updates.next(15_000, 'the update after the restart'), {
        version: [String(v2)],
        parents: [String(v1)],
        value: { n: 2 }
      })
      const v3 = (await server.putJSON('/braid/restart', { n: 3 })).version
      assert.deepEqual(await sub.updates.next(), { version: [String(v3)], parents: [String(v2)], value: { n: 3 } })
    } finally {
      sub?.close()
      await server.remove()
    }
  })
})
