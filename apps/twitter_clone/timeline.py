"""The timeline: a computed key that merges own and followed posts, newest first.

The app's documents, each in its author's own namespace (so each is signed by
its author and replicated to whoever holds that namespace):

- ``/profile``: ``{"name", "bio"}``
- ``/posts/<id>``: ``{"text", "time", "author", "reply_to"?}``; a reply is a post
  whose ``reply_to`` is the canonical key (``/~<id>/posts/<id>``) of another
- ``/likes/<author-id>/<post-id>``: ``{"post": <canonical post key>, "time"}``
- ``/following``: ``{<node id>: {"address": "host:port", "since": time}}``

``/timeline`` reads every namespace the node holds, so that replies and likes
from anyone who reached this node (a peer who follows us) are counted, while
only threads that involve the owner or someone they follow are shown. With no
thread to show and nobody followed it holds no value, so a node that never
used the app holds nothing of it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from statebus.computed import Reader
from statebus.errors import InvalidKey

KEY = "/timeline"
MAX_THREADS = 200
MAX_TEXT = 2000
MAX_DEPTH = 8  # deeper replies hang under the reply at this depth


@dataclass
class _Post:
    key: str
    author: str
    text: str
    time: str
    reply_to: str | None
    replies: list[_Post] = field(default_factory=list)


def _post(key: str, author: str, value: dict[str, Any]) -> _Post | None:
    """A post as stored, or None if it is not one (a namespace's owner can write anything)."""
    text, time, reply_to = value.get("text"), value.get("time"), value.get("reply_to")
    if not isinstance(text, str) or not isinstance(time, str):
        return None
    if value.get("author", author) != author:
        return None  # claims another author than the namespace that signed it
    if not isinstance(reply_to, str) or reply_to == key:
        reply_to = None
    return _Post(key, author, text[:MAX_TEXT], time, reply_to)


def _canonical(reader: Reader, key: str) -> str:
    return reader.key(key).canonical


async def timeline(read: Reader) -> dict[str, Any] | None:
    """The value of ``/timeline``; see the module docstring."""
    own = read.own
    following = await read.get("/following") or {}
    circle: set[str] = {own}
    posts: dict[str, _Post] = {}
    names: dict[str, str] = {}
    likes: dict[str, set[str]] = defaultdict(set)
    for namespace in await read.namespaces():
        prefix = "" if namespace == own else f"/~{namespace}"
        profile = await read.get(f"{prefix}/profile") or {}
        name = profile.get("name")
        names[namespace] = name if isinstance(name, str) else ""
        for key, value in (await read.folder(f"{prefix}/posts/")).items():
            post = _post(_canonical(read, key), namespace, value)
            if post is not None:
                posts[post.key] = post
        for value in (await read.folder(f"{prefix}/likes/")).values():
            target = value.get("post")
            if isinstance(target, str):
                likes[target].add(namespace)
    for node_id in following:
        try:
            circle.add(read.key(f"/~{node_id}/").namespace)
        except InvalidKey:
            continue  # not a node id: ignore what the owner's hand put there

    roots: list[_Post] = []
    for post in sorted(posts.values(), key=lambda p: p.time):
        parent = posts.get(post.reply_to) if post.reply_to else None
        if parent is not None and not _loops(post, posts):
            parent.replies.append(post)
        else:
            roots.append(post)
    shown = [post for post in roots if _involves(post, circle)]
    shown.sort(key=lambda p: p.time, reverse=True)

    def render(post: _Post, depth: int) -> dict[str, Any]:
        if depth < MAX_DEPTH:
            replies = [render(reply, depth + 1) for reply in post.replies]
        else:
            replies = [view(reply, []) for reply in _flatten(post.replies)]
        return view(post, replies)

    def view(post: _Post, replies: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "key": post.key,
            "author": post.author,
            "name": names.get(post.author, ""),
            "text": post.text,
            "time": post.time,
            "reply_to": post.reply_to,
            "likes": len(likes.get(post.key, ())),
            "liked": own in likes.get(post.key, ()),
            "replies": replies,
        }

    if not shown and not following:
        return None
    return {
        "following": [
            {
                "id": node_id,
                "name": names.get(node_id, ""),
                "address": entry.get("address", "") if isinstance(entry, dict) else "",
            }
            for node_id, entry in sorted(following.items())
        ],
        "posts": [render(post, 0) for post in shown[:MAX_THREADS]],
    }


def _loops(post: _Post, posts: dict[str, _Post]) -> bool:
    """Whether following ``reply_to`` from this post comes back to it."""
    seen = {post.key}
    step = post.reply_to
    while step is not None and step in posts:
        if step in seen:
            return True
        seen.add(step)
        step = posts[step].reply_to
    return False


def _involves(post: _Post, circle: set[str]) -> bool:
    """A thread is shown when the owner or someone they follow wrote any of it."""
    return post.author in circle or any(_involves(reply, circle) for reply in post.replies)


def _flatten(replies: list[_Post]) -> list[_Post]:
    flat: list[_Post] = []
    for reply in replies:
        flat.append(reply)
        flat.extend(_flatten(reply.replies))
    flat.sort(key=lambda p: p.time)
    return flat
