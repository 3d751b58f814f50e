from __future__ import annotations

import pytest

from statebus.errors import InvalidKey
from statebus.identity import Identity, NodeId
from statebus.keys import MAX_KEY_BYTES, Key, folders_of, parse_key

OWN: NodeId = Identity.generate().node_id
OTHER: NodeId = Identity.generate().node_id


def test_plain_paths_are_the_own_namespace() -> None:
    key = parse_key("/posts/1", OWN)
    assert key == Key(OWN, "/posts/1")
    assert key.canonical == f"/~{OWN}/posts/1"
    assert key.display(OWN) == "/posts/1"
    assert not key.is_folder


def test_the_own_long_form_is_the_same_key() -> None:
    assert parse_key(f"/~{OWN}/posts/1", OWN) == parse_key("/posts/1", OWN)


def test_another_namespace_keeps_its_long_form() -> None:
    key = parse_key(f"/~{OTHER}/posts/", OWN)
    assert key.namespace == OTHER and key.path == "/posts/" and key.is_folder
    assert key.display(OWN) == f"/~{OTHER}/posts/"
    assert parse_key(f"/~{OTHER}", OWN) == Key(OTHER, "/")
    assert parse_key(f"/~{OTHER.upper()}/x", OWN).namespace == OTHER


def test_percent_encoding_is_decoded_per_segment() -> None:
    assert parse_key("/posts/h%C3%A9llo%20w", OWN).path == "/posts/héllo w"
    assert parse_key("/a%3Fb", OWN).path == "/a?b"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("posts", "starts with '/'"),
        ("/a//b", "empty segment"),
        ("/a/../b", "'..'"),
        ("/./b", "'..'"),
        ("/a%2Fb", "encoded '/'"),
        ("/a%00b", "control character"),
        ("/a\x7fb", "control character"),
        ("/a%C2%85b", "control character"),
        ("/%FF", "UTF-8"),
        ("/_health", "machinery"),
        (f"/~{OTHER}/_secret", "machinery"),
        ("/~abc/x", "not a node id"),
        (f"/~{OTHER[:-1]}a/x", "not a node id"),
        ("/" + "x" * MAX_KEY_BYTES, "longer than"),
    ],
)
def test_keys_outside_the_grammar(raw: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        parse_key(raw, OWN)


def test_unicode_and_odd_but_harmless_characters_are_fine() -> None:
    for path in [
        "/日本/語",
        "/emoji/😀",
        "/a b",
        "/a.b/.hidden",
        "/~tilde-later/x".replace("~", "-"),
    ]:
        assert parse_key(path, OWN).path == path


def test_folders_of() -> None:
    assert folders_of("/~n/a/b/c") == ("/~n/", "/~n/a/", "/~n/a/b/")
    assert folders_of("/~n/a") == ("/~n/",)
    assert folders_of("/~n/a/") == ("/~n/",)
    assert folders_of("/~n/") == ()
