/*
 * The key browser: the node's key tree with live values, a JSON editor, the
 * node's id and share line, and its peers. It is served at /_ui/ and at any key
 * a browser opens (the page reads the key from its own URL). Everything shown
 * is built with textContent: a value is never parsed as HTML.
 */
(function () {
  'use strict';

  const bus = new Statebus();
  const $ = (id) => document.getElementById(id);
  const PEERS_EVERY_MS = 3000;
  const PREVIEW = 90;

  let folderStop = null;
  let keyStop = null;
  let shownFolder = null;
  let shownKey = null;
  let current = null; // the shown key's value
  let editing = false;
  let ownId = null;
  let owner = null; // true once /_acl answers (only the owner may read it), false on 401
  let rules = {}; // the node's sharing rules, /_acl, live
  let entriesShown = {}; // the folder's last listing, to re-render when rules change
  let sharingShown = null; // the key and rule the sharing form was last set from

  /* The path of a key in the own namespace (/~own/x -> /x), or null for another's. */
  function ownPath(path) {
    if (!path.startsWith('/~')) return path;
    if (ownId !== null && path.startsWith(`/~${ownId}/`)) return path.slice(ownId.length + 2);
    return null;
  }

  /* Only the owner writes, and only the own namespace; another's is a replica. */
  function writable(path) {
    return owner !== false && ownPath(path) !== null;
  }

  /* Who may read a path: the most specific rule that says "read" (as the node decides). */
  function sharing(path) {
    const candidates = [path]; // then its folders, innermost first: /a/b/c, /a/b/, /a/, /
    let end = path.lastIndexOf('/', path.length - 2);
    while (end >= 0) {
      candidates.push(path.slice(0, end + 1));
      end = end === 0 ? -1 : path.lastIndexOf('/', end - 1);
    }
    for (const candidate of candidates) {
      const rule = rules[candidate];
      if (rule && rule.read !== undefined) return {read: rule.read, by: candidate};
    }
    return {read: 'private', by: null};
  }

  function describe(read) {
    if (read === 'public') return 'public';
    if (Array.isArray(read)) return read.length ? `shared with ${read.length}` : 'private';
    return 'private';
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function pathFromLocation() {
    const raw = location.pathname;
    if (raw === '/' || raw.startsWith('/_ui')) return '/';
    return raw.split('/').map(decodeURIComponent).join('/');
  }

  function urlOf(path) {
    return path === '/' ? '/_ui/' : path.split('/').map(encodeURIComponent).join('/');
  }

  function parentOf(key) {
    return key.slice(0, key.lastIndexOf('/') + 1);
  }

  function go(path) {
    history.pushState(null, '', urlOf(path));
    show(path);
  }

  function link(text, path, className) {
    const a = el('a', {href: urlOf(path), textContent: text, className: className || ''});
    a.addEventListener('click', (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey) return;
      event.preventDefault();
      go(path);
    });
    return a;
  }

  function shortId(id) {
    return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
  }

  function preview(value) {
    const text = JSON.stringify(value);
    return text.length > PREVIEW ? `${text.slice(0, PREVIEW - 1)}…` : text;
  }

  function flash(node) {
    node.classList.remove('flash');
    void node.offsetWidth; // restart the animation
    node.classList.add('flash');
  }

  // -- the folder: crumbs and the tree of keys under it ----------------------

  function crumbs(folder) {
    const nav = $('crumbs');
    nav.replaceChildren(link('/', '/'));
    let path = '/';
    for (const segment of folder.split('/').slice(1, -1)) {
      path += `${segment}/`;
      const label = segment.startsWith('~') ? `~${shortId(segment.slice(1))}` : segment;
      nav.append(link(`${label}/`, path));
    }
  }

  function badge(path) {
    const own = owner && ownPath(path);
    if (!own) return null;
    const read = sharing(own).read;
    if (read === 'private' || (Array.isArray(read) && !read.length)) return null;
    return el('span', {className: `badge ${read === 'public' ? 'public' : 'shared'}`, textContent: describe(read)});
  }

  function renderTree(folder, entries) {
    entriesShown = entries;
    const children = new Map(); // name -> {folder: count} or {key, value}
    for (const [key, value] of Object.entries(entries)) {
      const rest = key.slice(folder.length);
      const slash = rest.indexOf('/');
      if (slash >= 0) {
        const name = rest.slice(0, slash + 1);
        const child = children.get(name) || {count: 0};
        child.count += 1;
        children.set(name, child);
      } else {
        children.set(rest, {key, value});
      }
    }
    const names = [...children.keys()].sort();
    $('keys').replaceChildren(
      ...names.map((name) => {
        const child = children.get(name);
        if (child.key === undefined) {
          return el(
            'li',
            {className: 'folder'},
            link(name, folder + name),
            el('span', {className: 'muted', textContent: ` ${child.count}`}),
            badge(folder + name),
          );
        }
        const item = el(
          'li',
          {className: child.key === shownKey ? 'doc selected' : 'doc'},
          link(name, child.key),
          badge(child.key),
          el('span', {className: 'preview', textContent: preview(child.value)}),
        );
        item.dataset.key = child.key;
        return item;
      }),
    );
    $('empty').hidden = names.length > 0;
  }

  /* Offer writes only where the node takes them. */
  function permit() {
    $('new-key').hidden = shownFolder === null || !writable(shownFolder);
    const mine = shownKey !== null && writable(shownKey);
    $('edit').hidden = !mine;
    $('delete').hidden = !mine || current === null;
    showSharing();
  }

  // -- sharing (the node's /_acl rules) ---------------------------------------

  function shownPath() {
    return shownKey !== null ? shownKey : shownFolder;
  }

  function showSharing() {
    const path = shownPath() === null ? null : ownPath(shownPath());
    $('sharing').hidden = !owner || path === null;
    if ($('sharing').hidden) return;
    const {read, by} = sharing(path);
    $('sharing-path').textContent = path;
    $('sharing-now').textContent = describe(read);
    $('sharing-now').className = `badge ${read === 'public' ? 'public' : describe(read) === 'private' ? 'private' : 'shared'}`;
    $('sharing-by').textContent = by === null ? 'private by default' : by === path ? 'by its own rule' : `as its folder ${by}`;
    // Reset the choice only when the key or its rule changed, never under the user's hand.
    const signature = `${path} ${JSON.stringify(rules[path] || null)}`;
    if (signature === sharingShown) return;
    sharingShown = signature;
    const own = rules[path] && rules[path].read !== undefined ? rules[path].read : undefined;
    $('sharing-choice').value = own === undefined ? 'inherit' : Array.isArray(own) ? 'ids' : own;
    $('sharing-ids').value = Array.isArray(own) ? own.join('\n') : '';
    $('sharing-ids').hidden = $('sharing-choice').value !== 'ids';
    $('sharing-error').textContent = '';
  }

  async function saveSharing(event) {
    event.preventDefault();
    const path = ownPath(shownPath());
    const choice = $('sharing-choice').value;
    const rule = rules[path] || {};
    let change;
    if (choice === 'inherit') change = rule.write === undefined ? null : {read: null};
    else if (choice === 'ids') change = {read: $('sharing-ids').value.split(/[\s,]+/).filter(Boolean)};
    else change = {read: choice};
    const response = await fetch('/_acl', {
      method: 'PATCH',
      headers: {'Content-Type': 'application/merge-patch+json', Accept: 'application/json'},
      body: JSON.stringify({[path]: change}),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      $('sharing-error').textContent = body.detail || response.statusText;
      return;
    }
    $('sharing-error').textContent = '';
    document.activeElement?.blur();
  }

  function followRules(value) {
    owner = true;
    rules = value || {};
    renderTree(shownFolder, entriesShown);
    permit();
  }

  function showFolder(folder) {
    if (folder === shownFolder) return;
    shownFolder = folder;
    entriesShown = {};
    crumbs(folder);
    $('keys').replaceChildren();
    if (folderStop) folderStop();
    let previous = {};
    folderStop = bus.get(folder, (entries, info) => {
      renderTree(folder, entries);
      if (info.key && JSON.stringify(previous[info.key]) !== JSON.stringify(entries[info.key])) {
        const item = [...$('keys').children].find((li) => li.dataset.key === info.key);
        if (item) flash(item);
      }
      previous = entries;
    });
  }

  // -- one key: its live value and the editor -------------------------------

  function showKey(key) {
    shownKey = key;
    for (const item of $('keys').children) {
      item.classList.toggle('selected', item.dataset.key === key);
    }
    if (keyStop) keyStop();
    keyStop = null;
    closeEditor();
    $('no-key').hidden = key !== null;
    $('key-view').hidden = key === null;
    if (key === null) return;
    $('key-name').textContent = key;
    $('key-version').textContent = '';
    $('key-value').textContent = '…';
    current = null;
    keyStop = bus.get(key, (value, info) => {
      const first = current === null && $('key-value').textContent === '…';
      current = value;
      $('key-value').textContent = value === null ? 'no value' : JSON.stringify(value, null, 2);
      $('key-value').classList.toggle('none', value === null);
      $('key-version').textContent = info.version ? `version ${info.version}` : '';
      permit();
      $('edit').textContent = value === null ? 'create' : 'edit';
      if (!first) flash($('key-value'));
      if (editing) $('editor-note').hidden = false;
    });
  }

  function openEditor() {
    editing = true;
    $('editor').hidden = false;
    $('key-actions').hidden = true;
    $('editor-note').hidden = true;
    $('editor-error').textContent = '';
    $('editor-text').value = JSON.stringify(current || {}, null, 2);
    $('editor-text').focus();
  }

  function closeEditor() {
    editing = false;
    $('editor').hidden = true;
    $('key-actions').hidden = false;
  }

  async function save(event) {
    event.preventDefault();
    let value;
    try {
      value = JSON.parse($('editor-text').value);
    } catch (error) {
      $('editor-error').textContent = `not JSON: ${error.message}`;
      return;
    }
    try {
      await bus.put(shownKey, value);
      closeEditor();
    } catch (error) {
      $('editor-error').textContent = error.detail || error.message;
    }
  }

  async function remove() {
    if (!confirm(`Delete ${shownKey}?`)) return;
    try {
      await bus.delete(shownKey);
    } catch (error) {
      alert(error.detail || error.message);
    }
  }

  function show(path) {
    const folder = path.endsWith('/') ? path : parentOf(path);
    showFolder(folder);
    showKey(path.endsWith('/') ? null : path);
    permit();
    document.title = `statebus · ${path}`;
  }

  // -- the node, its share line, its peers ---------------------------------

  async function node() {
    const response = await fetch('/_health', {cache: 'no-store'});
    const health = await response.json();
    ownId = health.node;
    permit();
    $('node-id').textContent = health.node;
    $('share-line').value = `${health.node}@${location.host}`;
    const app = await fetch('/_app/', {method: 'HEAD'});
    $('app-link').hidden = !app.ok;
  }

  /* One row of GET /_peers: {id, address, dialled, connected, last_sync, entries_in, ...}. */
  function peerRow(peer) {
    const facts = [
      peer.dialled ? `dials ${String(peer.address).split('@').pop()}` : 'dialled this node',
      peer.last_sync ? `last sync ${new Date(peer.last_sync).toLocaleString()}` : 'not synced yet',
      `entries in ${peer.entries_in ?? 0} · out ${peer.entries_out ?? 0}`,
    ];
    if (peer.refused) facts.push(`refused ${peer.refused}`);
    return el(
      'li',
      {},
      el('span', {className: `dot ${peer.connected ? 'on' : 'off'}`}),
      link(`~${shortId(peer.id)}`, `/~${peer.id}/`),
      el('span', {className: 'muted', textContent: peer.connected ? ' connected' : ' not connected'}),
      el('div', {className: 'facts', textContent: facts.join(' · ')}),
      peer.last_error ? el('div', {className: 'facts error', textContent: peer.last_error}) : null,
    );
  }

  async function peers() {
    let list = null;
    try {
      const response = await fetch('/_peers', {
        headers: {Accept: 'application/json'},
        cache: 'no-store',
      });
      if (response.ok) {
        list = (await response.json()).peers;
      }
    } catch (_) {
      /* the node is away; the status line says so */
    }
    // No peer API on this node (federation not built in): show nothing rather than guess.
    $('peers').hidden = !Array.isArray(list);
    if (Array.isArray(list)) {
      $('peer-list').replaceChildren(
        ...(list.length ? list.map(peerRow) : [el('li', {className: 'muted', textContent: 'none yet'})]),
      );
    }
    setTimeout(peers, PEERS_EVERY_MS);
  }

  function status({online, pending, error}) {
    const line = $('status');
    const login = error && error.status === 401;
    if (login && owner !== false) {
      owner = false;
      permit();
    }
    $('login-hint').hidden = !login;
    line.className = `status ${online && !error ? 'on' : 'off'}`;
    if (login) line.textContent = 'not logged in';
    else if (error) line.textContent = error.detail;
    else if (!online) line.textContent = pending ? `offline · ${pending} queued` : 'offline';
    else line.textContent = pending ? `saving ${pending}…` : 'live';
  }

  function newKey(event) {
    event.preventDefault();
    let name = $('new-key-name').value.trim();
    if (!name) return;
    if (!name.startsWith('/')) name = shownFolder + name;
    $('new-key-name').value = '';
    go(name);
    openEditor();
  }

  $('edit').addEventListener('click', openEditor);
  $('cancel').addEventListener('click', closeEditor);
  $('delete').addEventListener('click', remove);
  $('editor').addEventListener('submit', save);
  $('new-key').addEventListener('submit', newKey);
  $('sharing').addEventListener('submit', saveSharing);
  $('sharing-choice').addEventListener('change', () => {
    $('sharing-ids').hidden = $('sharing-choice').value !== 'ids';
  });
  $('copy-share').addEventListener('click', () => {
    $('share-line').select();
    navigator.clipboard?.writeText($('share-line').value);
  });
  window.addEventListener('popstate', () => show(pathFromLocation()));

  bus.status(status);
  show(pathFromLocation());
  bus.get('/_acl', followRules); // only the owner may read the rules: a visitor gets a 401
  node();
  peers();
})();
