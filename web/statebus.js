/*
 * statebus.js — the browser client of a statebus node. Plain JavaScript, no build step.
 *
 *   <script src="/_ui/statebus.js"></script>
 *   const bus = new Statebus();                       // the node that served this page
 *
 *   const stop = bus.get('/profile', (value, info) => { ... });   // live, until stop()
 *   bus.get('/posts/', (posts, info) => { ... });     // a folder: {key: value, ...}
 *   const value = await bus.get('/profile');          // read once (null if none)
 *   await bus.put('/profile', {name: 'Ada'});         // the value becomes this object
 *   await bus.patch('/profile', {bio: null});         // RFC 7396 merge patch
 *   await bus.delete('/profile');
 *   bus.status(({online, pending, error}) => { ... }); // connection and write queue
 *
 * Subscriptions ride on EventSource. When a stream drops, the browser reconnects
 * and sends Last-Event-ID, and the node sends only what changed since; if the
 * browser gives up (an error status), we open a fresh stream with backoff and the
 * node sends the whole state again. Either way every key keeps the newest version
 * it has told, and an event at or below it is dropped: no change is lost, none is
 * told twice. A folder's first callback comes once its listing is complete; keys
 * removed while we were away are dropped when a fresh listing ends.
 *
 * Writes go out one at a time, in order. A write that cannot reach the node (or
 * that the node answers 5xx or 429) stays queued and is sent again when a stream
 * reconnects, the browser comes back online, or a backoff timer fires. Retrying
 * is safe: PUT and PATCH are idempotent, and a repeated DELETE whose first try
 * landed resolves as done. Values shown are always the node's: a queued write
 * appears when the node has taken it. The queue is also kept in the tab's
 * sessionStorage, so a write made offline survives reloading the page: the new
 * page's Statebus sends it (its promise went with the old page). Each tab keeps
 * its own queue, so two tabs never send one write twice; closing the tab drops
 * what it still held. In a page, the first Statebus made for a node keeps its
 * queue there; new Statebus({persist: false}), and any other, in memory only.
 *
 * Callbacks get (value, info): value is the key's JSON object or null, or for a
 * folder a fresh {key: value} object; info is {key, version} of what changed
 * ({synced: true} for a folder's first listing). A key the reader may not read
 * (404: private keys look absent) is told as null, and asked again with backoff.
 * Streams and writes use the page's cookies, so a page of the node acts as its
 * owner once /_login has set the owner's; without it, status() reports a 401
 * error from anything only the owner may read.
 * Browsers allow about six HTTP/1.1 connections per host and each live key or
 * folder holds one: subscribe to folders or computed keys rather than many keys.
 */
(function (root) {
  'use strict';

  const MAX_BACKOFF_MS = 30000;

  class StatebusError extends Error {
    constructor(status, code, detail) {
      super(`${status} ${code}: ${detail}`);
      this.name = 'StatebusError';
      this.status = status;
      this.code = code;
      this.detail = detail;
    }
  }

  async function errorOf(response) {
    let body = {};
    try {
      body = await response.json();
    } catch (_) {
      /* not JSON: keep the status line */
    }
    return new StatebusError(
      response.status,
      body.error || 'http_error',
      body.detail || response.statusText,
    );
  }

  function checkKey(key) {
    if (typeof key !== 'string' || !key.startsWith('/')) {
      throw new TypeError(`a key is a path that starts with '/', not ${JSON.stringify(key)}`);
    }
  }

  function same(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  function backoff(tries) {
    return Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(tries, 8));
  }

  /* One live key or folder: one EventSource, shared by every callback on it. */
  class Channel {
    constructor(bus, key) {
      this.bus = bus;
      this.key = key;
      this.folder = key.endsWith('/');
      this.listeners = new Set();
      this.loaded = false; // the whole state has arrived and been told
      this.value = null; // a key's value
      this.entries = new Map(); // a folder's values by key
      this.versions = new Map(); // the newest version told, by key
      this.listed = null; // keys of a fresh folder listing, until `synced`
      this.source = null;
      this.timer = null;
      this.tries = 0;
      this.open();
    }

    open() {
      const source = (this.source = new EventSource(this.bus.url(this.key)));
      source.onopen = () => {
        this.tries = 0;
        this.listed = this.folder ? new Set() : null;
        this.bus._reached();
      };
      source.onmessage = (message) => this.receive(JSON.parse(message.data));
      source.addEventListener('synced', () => this.synced());
      source.onerror = () => {
        if (source !== this.source) return;
        this.bus._unreachable();
        if (source.readyState === EventSource.CLOSED) this.reopen();
      };
    }

    /* The browser gave up on the stream: ask why, then open a fresh one later. */
    async reopen() {
      this.source = null;
      const delay = backoff(this.tries++);
      try {
        const response = await fetch(this.bus.url(this.key), {
          headers: {Accept: 'application/json'},
          cache: 'no-store',
        });
        if ([400, 401, 403].includes(response.status)) this.bus._failed(await errorOf(response));
        // A key this reader may not read looks like one never written: tell null once.
        if (response.status === 404 && !this.folder && !this.loaded) {
          this.receive({key: this.key, value: null, version: 0});
        }
      } catch (_) {
        this.bus._unreachable();
      }
      if (this.listeners.size) {
        this.timer = setTimeout(() => {
          this.timer = null;
          if (this.listeners.size) this.open();
        }, delay);
      }
    }

    receive(event) {
      const key = this.folder ? event.key : this.key;
      if (this.listed) this.listed.add(key);
      const told = this.versions.get(key);
      if (told !== undefined && event.version <= told) return; // a change told already
      this.versions.set(key, event.version);
      this.set(key, event.value, {key, version: event.version});
    }

    synced() {
      if (this.listed && this.loaded) {
        for (const key of [...this.entries.keys()]) {
          if (!this.listed.has(key)) this.set(key, null, {key, version: this.versions.get(key)});
        }
      }
      this.listed = null;
      if (!this.loaded) {
        this.loaded = true;
        this.emit({synced: true});
      }
    }

    set(key, value, info) {
      if (this.folder) {
        if (value === null) {
          if (!this.entries.delete(key)) return;
        } else {
          if (this.entries.has(key) && same(this.entries.get(key), value)) return;
          this.entries.set(key, value);
        }
        if (!this.loaded) return; // the first listing is told once, when it is complete
      } else {
        if (this.loaded && same(this.value, value)) return;
        this.value = value;
        this.loaded = true;
      }
      this.emit(info);
    }

    current() {
      return this.folder ? Object.fromEntries(this.entries) : this.value;
    }

    emit(info) {
      for (const listener of [...this.listeners]) this.call(listener, info);
    }

    call(listener, info) {
      try {
        listener(this.current(), info);
      } catch (error) {
        (root.reportError || console.error)(error);
      }
    }

    close() {
      clearTimeout(this.timer);
      if (this.source) this.source.close();
      this.source = null;
    }
  }

  const claimed = new Set(); // saved queues this page's Statebus objects hold, by name

  /* Where a Statebus keeps its write queue across reloads: the tab's sessionStorage
     under one name per node, or nowhere (no storage, persist: false, or another
     Statebus of this page holds that name: one owner, or each would drop the other's). */
  class SavedQueue {
    constructor(base, enabled) {
      this.name = `statebus queue ${base || (root.location ? root.location.origin : '')}`;
      this.storage = null;
      if (!enabled || claimed.has(this.name)) return;
      try {
        if (root.sessionStorage) this.storage = root.sessionStorage;
      } catch (_) {
        /* storage denied (sandboxed frame, privacy settings): memory only */
      }
      if (this.storage) claimed.add(this.name);
    }

    load() {
      if (!this.storage) return [];
      try {
        const saved = JSON.parse(this.storage.getItem(this.name) || '[]');
        return Array.isArray(saved) ? saved.filter(validOp) : [];
      } catch (_) {
        return []; // unreadable: nothing to restore
      }
    }

    save(queue) {
      if (!this.storage) return;
      try {
        if (!queue.length) this.storage.removeItem(this.name);
        else {
          const ops = queue.map(({method, key, body, type}) => ({method, key, body, type}));
          this.storage.setItem(this.name, JSON.stringify(ops));
        }
      } catch (_) {
        /* over the storage quota: the queue still lives in memory */
      }
    }
  }

  function validOp(op) {
    return (
      op &&
      ['PUT', 'PATCH', 'DELETE'].includes(op.method) &&
      typeof op.key === 'string' &&
      op.key.startsWith('/')
    );
  }

  class Statebus {
    /* options.base: the node's URL (default: this page's node);
       options.persist: keep queued writes across reloads (default true). */
    constructor(options = {}) {
      this.base = (options.base || '').replace(/\/+$/, '');
      this.channels = new Map();
      this.saved = new SavedQueue(this.base, options.persist !== false);
      // Writes a previous page of this tab queued and could not send: ours to send now
      // (tries: 1, as one may have landed unanswered). Their promises went with that
      // page, so a refusal is told through status() instead.
      const refused = (error) => this._failed(error);
      this.queue = this.saved
        .load()
        .map((op) => ({...op, tries: 1, resolve() {}, reject: refused}));
      this.online = true;
      this.error = null;
      this.flushing = false;
      this.flushTimer = null;
      this.flushTries = 0;
      this.watchers = new Set();
      this._onOnline = () => this.flush();
      if (root.addEventListener) root.addEventListener('online', this._onOnline);
      if (this.queue.length) queueMicrotask(() => this.flush());
    }

    url(key) {
      return this.base + key.split('/').map(encodeURIComponent).join('/');
    }

    /* get(key, callback) subscribes and returns stop(); get(key) reads once. */
    get(key, callback) {
      checkKey(key);
      if (callback === undefined) return this._read(key);
      let channel = this.channels.get(key);
      if (!channel) this.channels.set(key, (channel = new Channel(this, key)));
      channel.listeners.add(callback);
      if (channel.loaded) {
        queueMicrotask(() => {
          if (channel.listeners.has(callback)) channel.call(callback, {key, initial: true});
        });
      }
      return () => {
        channel.listeners.delete(callback);
        if (!channel.listeners.size && this.channels.get(key) === channel) {
          channel.close();
          this.channels.delete(key);
        }
      };
    }

    async _read(key) {
      const response = await fetch(this.url(key), {
        headers: {Accept: 'application/json'},
        cache: 'no-store',
      });
      if (response.status === 404 && !key.endsWith('/')) return null;
      if (!response.ok) throw await errorOf(response);
      return response.json();
    }

    put(key, value) {
      return this._write('PUT', key, value, 'application/json');
    }

    patch(key, fields) {
      return this._write('PATCH', key, fields, 'application/merge-patch+json');
    }

    delete(key) {
      return this._write('DELETE', key, undefined, undefined);
    }

    _write(method, key, value, type) {
      try {
        checkKey(key);
        if (type && (value === null || typeof value !== 'object' || Array.isArray(value))) {
          throw new TypeError(`${method} ${key}: the value must be a JSON object`);
        }
      } catch (error) {
        return Promise.reject(error);
      }
      const body = type ? JSON.stringify(value) : undefined;
      return new Promise((resolve, reject) => {
        this.queue.push({method, key, body, type, tries: 0, resolve, reject});
        this.saved.save(this.queue);
        this._tell();
        this.flush();
      });
    }

    /* Send queued writes, in order, until the queue is empty or the node is away. */
    async flush() {
      if (this.flushing) return;
      this.flushing = true;
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
      try {
        while (this.queue.length) {
          const op = this.queue[0];
          op.tries += 1;
          let response;
          try {
            response = await fetch(this.url(op.key), {
              method: op.method,
              headers: op.type
                ? {'Content-Type': op.type, Accept: 'application/json'}
                : {Accept: 'application/json'},
              body: op.body,
              cache: 'no-store',
            });
          } catch (_) {
            this._unreachable();
            this._flushLater();
            return;
          }
          if (response.status >= 500 || response.status === 429) {
            this._flushLater();
            return;
          }
          this.queue.shift();
          this.saved.save(this.queue);
          this.flushTries = 0;
          this._reached();
          if (response.ok) op.resolve(await response.json());
          else if (op.method === 'DELETE' && response.status === 404 && op.tries > 1) {
            op.resolve(null); // the try that failed to answer had deleted it
          } else op.reject(await errorOf(response));
          this._tell();
        }
      } finally {
        this.flushing = false;
      }
    }

    _flushLater() {
      clearTimeout(this.flushTimer);
      this.flushTimer = setTimeout(() => this.flush(), backoff(this.flushTries++));
    }

    /* status(callback): callback({online, pending, error}) now and on every change. */
    status(callback) {
      this.watchers.add(callback);
      callback(this._status());
      return () => this.watchers.delete(callback);
    }

    _status() {
      return {online: this.online, pending: this.queue.length, error: this.error};
    }

    _tell() {
      const status = this._status();
      for (const watcher of [...this.watchers]) watcher(status);
    }

    _reached() {
      const changed = !this.online || this.error;
      this.online = true;
      this.error = null;
      if (changed) this._tell();
      if (this.queue.length && !this.flushing) this.flush();
    }

    _unreachable() {
      if (!this.online) return;
      this.online = false;
      this._tell();
    }

    _failed(error) {
      this.error = error;
      this._tell();
    }

    /* Stop every subscription; queued writes stay queued (flush() still sends them). */
    close() {
      for (const channel of this.channels.values()) channel.close();
      this.channels.clear();
      clearTimeout(this.flushTimer);
      if (root.removeEventListener) root.removeEventListener('online', this._onOnline);
    }
  }

  Statebus.Error = StatebusError;
  root.Statebus = Statebus;
})(typeof window !== 'undefined' ? window : globalThis);
