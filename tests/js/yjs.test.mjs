// A real `yjs` Y.Doc against a real node: binary state in, updates out by
// PUT application/octet-stream, and the node's JSON agreeing at every step.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import * as Y from 'yjs'
import { StatebusNode } from './statebus.mjs'

let node
before(async () => { node = await StatebusNode.start() })
after(async () => { await node?.remove() })

// A Yjs client of one key: it sends each of its transactions as one update.
class YjsClient {
  constructor (key) {
    this.key = key
    this.doc = new Y.Doc()
    this.data = this.doc.getMap('data')
    this.sent = Y.encodeStateVector(this.doc)
  }

  // Run `edit` in one transaction and PUT what it changed; the node's answer.
  async edit (edit) {
    this.doc.transact(() => edit(this.data))
    const update = Y.encodeStateAsUpdate(this.doc, this.sent)
    this.sent = Y.encodeStateVector(this.doc)
    return node.putUpdate(this.key, update)
  }

  // Merge what the node has and this doc lacks.
  async pull () {
    Y.applyUpdate(this.doc, await node.state(this.key, Y.encodeStateVector(this.doc)), 'node')
    this.sent = Y.encodeStateVector(this.doc)
  }

  json () {
    return this.data.toJSON()
  }
}

// The node's JSON and binary state agree with the client's doc.
async function assertAgrees (client) {
  assert.deepEqual(await node.json(client.key), client.json())
  const fresh = new Y.Doc()
  Y.applyUpdate(fresh, await node.state(client.key))
  assert.deepEqual(fresh.getMap('data').toJSON(), client.json())
  assert.deepEqual(Y.encodeStateVector(fresh), Y.encodeStateVector(client.doc))
  assert.deepEqual(Y.encodeStateAsUpdate(fresh), Y.encodeStateAsUpdate(client.doc))
}

describe('the node as a Yjs backend', () => {
  test('a JSON-written value reads the same in a Y.Doc, with the Yjs types it names', async () => {
    const value = {
      name: 'Ada 😀',
      count: 42,
      negative: -7,
      ratio: 0.1,
      half: 1.5,
      safe: Number.MAX_SAFE_INTEGER,
      unsafeFloat: 1e300,
      yes: true,
      no: false,
      nothing: null,
      tags: ['a', 1, 2.5, null, true, { nested: ['x'] }, [[]]],
      profile: { address: { city: 'Zürich', zip: 8000 }, empty: {} }
    }
    await node.putJSON('/json/value', value)
    const doc = new Y.Doc()
    Y.applyUpdate(doc, await node.state('/json/value'))
    const data = doc.getMap('data')
    assert.deepEqual(data.toJSON(), value)
    assert.deepEqual(await node.json('/json/value'), value)
    assert.ok(data.get('profile') instanceof Y.Map)
    assert.ok(data.get('profile').get('address') instanceof Y.Map)
    assert.ok(data.get('tags') instanceof Y.Array)
    assert.ok(data.get('tags').get(5) instanceof Y.Map)
    assert.equal(typeof data.get('name'), 'string')
    assert.equal(typeof data.get('count'), 'number')
    assert.ok(Number.isInteger(data.get('count')))
  })

  test('Y.Map, nested maps and Y.Array edited in Yjs: JSON and binary state agree', async () => {
    const client = new YjsClient('/yjs/maps')
    await client.edit((data) => {
      data.set('title', 'first')
      data.set('count', 1)
      const settings = new Y.Map()
      data.set('settings', settings)
      settings.set('theme', 'dark')
      const inner = new Y.Map()
      settings.set('inner', inner)
      inner.set('deep', [1, 2, 3]) // a plain JS array inside a Y.Map is JSON content
      const list = new Y.Array()
      data.set('list', list)
      list.push(['a', 'b', 'c'])
    })
    await assertAgrees(client)
    await client.edit((data) => {
      data.set('count', 2)
      data.get('settings').set('theme', 'light')
      data.get('settings').get('inner').set('more', { x: 1 })
      data.get('list').insert(1, ['between'])
      data.get('list').delete(0, 1)
      data.get('list').push([new Y.Map([['k', 'v']])])
      data.delete('title')
    })
    await assertAgrees(client)
    assert.deepEqual(await node.json('/yjs/maps'), {
      count: 2,
      settings: { theme: 'light', inner: { deep: [1, 2, 3], more: { x: 1 } } },
      list: ['between', 'b', 'c', { k: 'v' }]
    })
  })

  test('Y.Text insertions and deletions, emoji and non-BMP text: JSON and binary agree', async () => {
    const client = new YjsClient('/yjs/text')
    const steps = [
      (t) => t.insert(0, 'hello world'),
      (t) => t.insert(5, ' 😀'), // a surrogate pair: two UTF-16 units, four UTF-8 bytes
      (t) => t.insert(t.length, ' 𝄞 中文 👩‍👩‍👧'), // non-BMP, CJK, a ZWJ sequence
      (t) => t.delete(0, 1), // delete before the emoji
      (t) => t.delete(t.toString().indexOf('😀'), 2), // delete the whole pair
      (t) => t.insert(t.toString().indexOf('𝄞') + 2, '!'), // right after a non-BMP char
      (t) => t.delete(t.toString().indexOf('中'), 1),
      (t) => t.insert(0, 'é'), // a two-byte UTF-8 char in front of everything
      (t) => t.format(0, 3, { bold: true }) // formatting does not show in JSON
    ]
    await client.edit((data) => data.set('text', new Y.Text()))
    for (const step of steps) {
      await client.edit((data) => step(data.get('text')))
      await assertAgrees(client)
    }
    assert.equal((await node.json('/yjs/text')).text, 'éello  world 𝄞! 文 👩‍👩‍👧')
  })

  test('a JSON write edits a Yjs-made Y.Text in place, keeping concurrent Yjs edits', async () => {
    const client = new YjsClient('/yjs/text-json')
    await client.edit((data) => data.set('text', new Y.Text('😀 one 𝄞 two')))
    const text = client.data.get('text')
    // Concurrently: the node gets a JSON write near the end, the client types at the start.
    await node.putJSON('/yjs/text-json', { text: '😀 one 𝄞 two three' })
    await client.edit(() => text.insert(0, '>'))
    await client.pull()
    assert.ok(client.data.get('text') === text, 'still the same Y.Text')
    assert.equal(text.toString(), '>😀 one 𝄞 two three')
    await assertAgrees(client)
    // A JSON write in the middle, right after non-BMP characters.
    await node.putJSON('/yjs/text-json', { text: '>😀 one 𝄞🎉 two three' })
    await client.pull()
    assert.equal(text.toString(), '>😀 one 𝄞🎉 two three')
    await assertAgrees(client)
  })

  test('?since=<state vector> sends only what the client lacks', async () => {
    const client = new YjsClient('/yjs/since')
    await client.edit((data) => data.set('big', 'x'.repeat(10_000)))
    const other = new YjsClient('/yjs/since')
    await other.pull()
    await other.edit((data) => data.set('small', 1))
    const full = await node.state('/yjs/since')
    const missing = await node.state('/yjs/since', Y.encodeStateVector(client.doc))
    assert.ok(missing.length < 100, `the diff is ${missing.length} bytes`)
    assert.ok(full.length > 10_000)
    Y.applyUpdate(client.doc, missing)
    assert.deepEqual(client.json(), { big: 'x'.repeat(10_000), small: 1 })
    assert.deepEqual(Y.encodeStateVector(client.doc), Y.encodeStateVector(other.doc))
    // Nothing is missing now: the empty update.
    const none = Y.decodeUpdate(await node.state('/yjs/since', Y.encodeStateVector(client.doc)))
    assert.equal(none.structs.length, 0)
    assert.equal(none.ds.clients.size, 0)
  })

  test('content JSON cannot hold reads as JavaScript shows it, and never breaks the key', async () => {
    const client = new YjsClient('/yjs/odd')
    await client.edit((data) => {
      data.set('bytes', new Uint8Array([1, 2, 3, 250]))
      data.set('nan', NaN)
      data.set('inf', -Infinity)
      data.set('big', 10n)
      const xml = new Y.XmlFragment()
      data.set('xml', xml)
      const p = new Y.XmlElement('p')
      xml.insert(0, [p])
      p.insert(0, [new Y.XmlText('hi')])
      data.set('sub', new Y.Doc())
      data.set('fine', 'still here')
    })
    assert.deepEqual(await node.json('/yjs/odd'), {
      bytes: Buffer.from([1, 2, 3, 250]).toString('base64'),
      nan: null,
      inf: null,
      big: 10,
      xml: '<p>hi</p>',
      sub: {},
      fine: 'still here'
    })
    // The JavaScript view agrees wherever JSON.stringify can show the value.
    const js = JSON.parse(JSON.stringify(client.json(), (k, v) => (typeof v === 'bigint' ? Number(v) : v)))
    assert.deepEqual({ ...js, bytes: undefined }, {
      ...(await node.json('/yjs/odd')),
      bytes: undefined
    })
    // A JSON write of what was read changes nothing, and the bytes stay bytes.
    const version = (await node.putJSON('/yjs/odd', await node.json('/yjs/odd'))).version
    await client.pull()
    assert.ok(client.data.get('bytes') instanceof Uint8Array)
    assert.equal(version, (await node.putJSON('/yjs/odd', await node.json('/yjs/odd'))).version)
  })
})
