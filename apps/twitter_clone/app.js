/*
 * chirp: a twitter clone on the node's public HTTP surface only.
 *
 * It reads two keys, /profile and /timeline (computed by the node from the
 * owner's and followed users' profiles, posts and likes), and writes the
 * owner's own documents: /profile, /posts/<id>, /likes/<author>/<post>,
 * /following.
 * Following someone also asks the node to add them as a peer (POST /_peers).
 * Every text from the network is set with textContent, never parsed as HTML.
 *
 * Sharing follows the node's rules (/_acl, which only the owner may read).
 * A social profile is public: on the owner's first visit the app shares
 * /profile, /posts/ and /likes/ publicly unless a rule already says otherwise
 * (the key browser changes them). "friends only" writes a rule for the post
 * first, readable by the people you follow, and then the post; friends'
 * nodes get it, nobody else's. A visitor without the owner's cookie sees the
 * owner's public profile and posts, read only.
 */
(function () {
  'use strict';

  const bus = new Statebus();
  const $ = (id) => document.getElementById(id);
  const SHARE_LINE = /^([a-z2-7]{56})@([^\s/@]+)$/i;
  const MAX_POST = 500;

  let me = null; // this node's id
  let owner = null; // true once /_acl answers (only the owner may read it), false on 401
  let rules = {}; // the node's sharing rules
  const PUBLIC_BY_DEFAULT = ['/profile', '/posts/', '/likes/'];
  let latest = null; // the last /timeline value
  const views = new Map(); // post key -> its element and parts

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function shortId(id) {
    return `${id.slice(0, 6)}…${id.slice(-4)}`;
  }

  function now() {
    return new Date().toISOString();
  }

  function newPostId() {
    const random = Math.random().toString(36).slice(2, 6).padEnd(4, '0');
    return `${now().replace(/[:.]/g, '-')}-${random}`;
  }

  function ago(time) {
    const seconds = (Date.now() - Date.parse(time)) / 1000;
    if (!Number.isFinite(seconds)) return '';
    if (seconds < 45) return 'just now';
    if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)}h`;
    return new Date(time).toLocaleDateString();
  }

  function likeKey(post) {
    const prefix = `/~${post.author}/posts/`;
    return `/likes/${post.author}/${post.key.slice(prefix.length)}`;
  }

  function problem(error) {
    return error.detail || error.message || String(error);
  }

  // -- the timeline ---------------------------------------------------------

  function view(key) {
    let parts = views.get(key);
    if (parts) return parts;
    const name = el('span', {className: 'name'});
    const who = el('span', {className: 'who'});
    const time = el('time', {className: 'muted'});
    const scope = el('span', {className: 'badge shared'});
    const text = el('p', {className: 'text'});
    const count = el('span', {className: 'count'});
    const like = el('button', {type: 'button', className: 'like', title: 'like'}, '♥ ', count);
    const reply = el('button', {type: 'button', className: 'reply-button'}, 'reply');
    const input = el('textarea', {rows: 2, maxLength: MAX_POST, placeholder: 'Write a reply'});
    const send = el('button', {type: 'submit'}, 'reply');
    const error = el('span', {className: 'error'});
    const form = el('form', {className: 'reply-form', hidden: true}, input, el('div', {className: 'row'}, send, error));
    const replies = el('div', {className: 'replies'});
    const root = el(
      'article',
      {className: 'post'},
      el('header', {className: 'meta'}, name, who, time, scope),
      text,
      el('div', {className: 'actions'}, like, reply),
      form,
      replies,
    );
    root.dataset.key = key;
    parts = {root, name, who, time, scope, text, count, like, reply, form, input, error, replies, post: null};
    like.addEventListener('click', () => toggleLike(parts.post, like));
    reply.addEventListener('click', () => {
      form.hidden = !form.hidden;
      if (!form.hidden) input.focus();
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      sendReply(parts);
    });
    views.set(key, parts);
    return parts;
  }

  function render(post, alive) {
    const parts = view(post.key);
    alive.add(post.key);
    parts.post = post;
    parts.root.classList.toggle('mine', post.author === me);
    parts.name.textContent = post.name || (post.author === me ? 'you' : 'someone');
    parts.who.textContent = `~${shortId(post.author)}`;
    parts.who.title = post.author;
    parts.time.textContent = ago(post.time);
    parts.time.dateTime = post.time;
    parts.time.title = new Date(post.time).toLocaleString();
    parts.text.textContent = post.text;
    const read = owner && post.author === me ? readersOf(post.key.slice(me.length + 2)) : 'public';
    parts.root.classList.toggle('restricted', read !== 'public');
    parts.scope.textContent = read === 'public' ? '' : Array.isArray(read) && read.length ? 'friends only' : 'only you';
    parts.count.textContent = String(post.likes);
    parts.like.classList.toggle('liked', post.liked);
    parts.like.setAttribute('aria-pressed', String(post.liked));
    parts.like.title = post.liked ? 'unlike' : 'like';
    parts.reply.textContent = post.replies.length ? `reply · ${post.replies.length}` : 'reply';
    place(parts.replies, post.replies.map((reply) => render(reply, alive).root));
    return parts;
  }

  /* Put children in order, moving only what must move (an open reply keeps its focus). */
  function place(parent, children) {
    children.forEach((child, index) => {
      if (parent.children[index] !== child) parent.insertBefore(child, parent.children[index] || null);
    });
    while (parent.children.length > children.length) parent.lastElementChild.remove();
  }

  /* /timeline holds no value until there is a post to show or someone followed. */
  function showTimeline(value) {
    latest = value || {posts: [], following: []};
    const alive = new Set();
    place($('timeline'), latest.posts.map((post) => render(post, alive).root));
    for (const key of [...views.keys()]) if (!alive.has(key)) views.delete(key);
    $('empty').hidden = latest.posts.length > 0;
    showFollowing(latest.following);
  }

  let latestProfile = null;

  function showProfile(profile) {
    latestProfile = profile;
    $('visitor-name').textContent = (profile && profile.name) || 'someone';
    $('visitor-bio').textContent = (profile && profile.bio) || '';
    for (const [id, name] of [['profile-name', 'name'], ['profile-bio', 'bio']]) {
      const input = $(id);
      const text = profile && typeof profile[name] === 'string' ? profile[name] : '';
      if (document.activeElement !== input && !input.dataset.dirty) input.value = text;
    }
  }

  function showFollowing(people) {
    $('following').replaceChildren(
      ...people.map((person) => {
        const unfollow = el('button', {type: 'button', className: 'small'}, 'unfollow');
        unfollow.addEventListener('click', () => bus.patch('/following', {[person.id]: null}));
        return el(
          'li',
          {},
          el('span', {className: 'name', textContent: person.name || 'someone'}),
          el('span', {className: 'who', textContent: `~${shortId(person.id)}`, title: person.id}),
          el('span', {className: 'spacer'}),
          unfollow,
        );
      }),
    );
  }

  // -- sharing --------------------------------------------------------------

  async function shareRule(patch) {
    const response = await fetch('/_acl', {
      method: 'PATCH',
      headers: {'Content-Type': 'application/merge-patch+json', Accept: 'application/json'},
      body: JSON.stringify(patch),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.detail || `sharing failed: ${response.status}`);
    }
  }

  /* Who may read one of the owner's keys: the most specific rule that says "read". */
  function readersOf(path) {
    const candidates = [path]; // then its folders, innermost first: /a/b, /a/, /
    let end = path.lastIndexOf('/', path.length - 2);
    while (end >= 0) {
      candidates.push(path.slice(0, end + 1));
      end = end === 0 ? -1 : path.lastIndexOf('/', end - 1);
    }
    for (const candidate of candidates) {
      const rule = rules[candidate];
      if (rule && rule.read !== undefined) return rule.read;
    }
    return 'private';
  }

  function followRules(value) {
    const first = owner !== true;
    owner = true;
    rules = value || {};
    document.body.classList.remove('visitor');
    $('friends-only-choice').hidden = false;
    if (first) {
      const missing = PUBLIC_BY_DEFAULT.filter((path) => !rules[path]);
      if (missing.length) {
        shareRule(Object.fromEntries(missing.map((path) => [path, {read: 'public'}]))).catch(
          (error) => ($('compose-error').textContent = problem(error)),
        );
      }
    }
    if (latest) showTimeline(latest);
  }

  // -- a visitor: the owner's public profile and posts, read only -------------

  function visit() {
    owner = false;
    document.body.classList.add('visitor');
    bus.get('/posts/', (posts) => {
      const profile = latestProfile || {};
      const byKey = new Map();
      for (const [key, value] of Object.entries(posts)) {
        if (typeof value.text !== 'string' || typeof value.time !== 'string') continue;
        const canonical = `/~${me}${key}`;
        byKey.set(canonical, {
          key: canonical, author: me, name: profile.name || '', text: value.text, time: value.time,
          reply_to: value.reply_to || null, likes: 0, liked: false, replies: [],
        });
      }
      const roots = [];
      for (const post of [...byKey.values()].sort((a, b) => (a.time < b.time ? -1 : 1))) {
        const parent = post.reply_to && byKey.get(post.reply_to);
        if (parent) parent.replies.push(post);
        else roots.push(post);
      }
      roots.reverse();
      showTimeline({posts: roots, following: []});
    });
  }

  // -- writing --------------------------------------------------------------

  async function post(event) {
    event.preventDefault();
    const text = $('compose-text').value.trim();
    if (!text) return;
    $('compose-error').textContent = '';
    const key = `/posts/${newPostId()}`;
    try {
      if ($('friends-only').checked) {
        // The rule first: the post must never exist without it.
        const friends = (latest ? latest.following : []).map((person) => person.id);
        await shareRule({[key]: {read: friends}});
      }
      await bus.put(key, {text, time: now(), author: me});
      $('compose-text').value = '';
      $('friends-only').checked = false;
      countChars();
    } catch (error) {
      $('compose-error').textContent = problem(error);
    }
  }

  async function sendReply(parts) {
    const text = parts.input.value.trim();
    if (!text) return;
    parts.error.textContent = '';
    try {
      await bus.put(`/posts/${newPostId()}`, {text, time: now(), author: me, reply_to: parts.post.key});
      parts.input.value = '';
      parts.form.hidden = true;
    } catch (error) {
      parts.error.textContent = problem(error);
    }
  }

  async function toggleLike(target, button) {
    button.disabled = true;
    try {
      if (target.liked) await bus.delete(likeKey(target));
      else await bus.put(likeKey(target), {post: target.key, time: now()});
    } catch (error) {
      button.title = problem(error);
    } finally {
      button.disabled = false;
    }
  }

  async function saveProfile(event) {
    event.preventDefault();
    const name = $('profile-name').value.trim();
    const bio = $('profile-bio').value.trim();
    try {
      await bus.patch('/profile', {name, bio});
      for (const id of ['profile-name', 'profile-bio']) delete $(id).dataset.dirty;
      $('profile-saved').textContent = 'saved';
    } catch (error) {
      $('profile-saved').textContent = problem(error);
    }
  }

  /* A share line, or an invite link that carries one in ?follow=. */
  function shareLineIn(text) {
    let line = text.trim();
    try {
      const url = new URL(line);
      line = url.searchParams.get('follow') || line;
    } catch (_) {
      /* not a link: a share line itself */
    }
    const match = SHARE_LINE.exec(line);
    return match ? {id: match[1].toLowerCase(), address: match[2], line: `${match[1].toLowerCase()}@${match[2]}`} : null;
  }

  async function follow(event) {
    event.preventDefault();
    const error = $('follow-error');
    error.textContent = '';
    const found = shareLineIn($('follow-line').value);
    if (!found) {
      error.textContent = 'that is not a share line (id@host:port) or an invite link';
      return;
    }
    if (found.id === me) {
      error.textContent = 'that is you';
      return;
    }
    let response;
    try {
      response = await fetch('/_peers', {
        method: 'POST',
        headers: {'Content-Type': 'application/json', Accept: 'application/json'},
        body: JSON.stringify({peer: found.line}),
      });
    } catch (_) {
      error.textContent = 'the node is not answering';
      return;
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) {
        /* keep the status line */
      }
      // 404/405: this node has no peer API (federation is not part of it).
      error.textContent = [404, 405].includes(response.status)
        ? `this node cannot add peers (${detail})`
        : detail;
      return;
    }
    try {
      await bus.patch('/following', {[found.id]: {address: found.address, since: now()}});
      $('follow-line').value = '';
    } catch (failure) {
      error.textContent = problem(failure);
    }
  }

  // -- the page -------------------------------------------------------------

  function countChars() {
    $('compose-count').textContent = String(MAX_POST - $('compose-text').value.length);
  }

  function status({online, pending, error}) {
    const line = $('status');
    const login = error && error.status === 401;
    if (login && owner === null) visit();
    $('login-hint').hidden = !login;
    line.className = `status ${online && !error ? 'on' : 'off'}`;
    if (login) line.textContent = 'not logged in';
    else if (error) line.textContent = error.detail;
    else if (!online) line.textContent = pending ? `offline · ${pending} queued` : 'offline';
    else line.textContent = pending ? `sending ${pending}…` : 'live';
  }

  async function start() {
    const health = await (await fetch('/_health', {cache: 'no-store'})).json();
    me = health.node;
    const line = `${me}@${location.host}`;
    $('share-line').value = line;
    $('invite-link').value = `${location.origin}/?follow=${line}`;
    const invited = new URLSearchParams(location.search).get('follow');
    if (invited) {
      const found = shareLineIn(invited);
      if (found && found.id === me) $('invite-note').hidden = false;
      else if (found) $('follow-line').value = found.line;
    }
    bus.get('/profile', showProfile);
    bus.get('/timeline', (value) => {
      if (owner !== false) showTimeline(value);
    });
    bus.get('/_acl', followRules); // only the owner may read the rules: a visitor gets a 401
  }

  function copy(id) {
    $(id).select();
    navigator.clipboard?.writeText($(id).value);
  }

  $('compose').addEventListener('submit', post);
  $('compose-text').addEventListener('input', countChars);
  $('profile').addEventListener('submit', saveProfile);
  for (const id of ['profile-name', 'profile-bio']) {
    $(id).addEventListener('input', () => ($(id).dataset.dirty = '1'));
  }
  $('follow').addEventListener('submit', follow);
  $('copy-share').addEventListener('click', () => copy('share-line'));
  $('copy-invite').addEventListener('click', () => copy('invite-link'));
  setInterval(() => showTimeline(latest), 30000); // keep "5m ago" honest
  bus.status(status);
  start();
})();
