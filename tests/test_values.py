"""JSON inside Yjs documents: validation, minimal diffs, RFC 7396 merge patches."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from statebus.errors import InvalidBody
from statebus.values import DocValue, json_equal, normalize, parse_object


def make(value: dict[str, Any] | None = None) -> tuple[DocValue, list[bytes]]:
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    view = DocValue(doc)
    if value is not None:
        with doc.transaction():
            view.assign(value)
    updates.clear()
    return view, updates


def test_assigning_the_same_value_makes_no_operation() -> None:
    value = {"a": 1, "b": [1, {"c": "x"}], "d": {"e": None, "f": True}}
    view, updates = make(value)
    with view.doc.transaction():
        view.assign(value)
    assert updates == []
    assert view.read() == value


def test_only_changed_fields_become_operations() -> None:
    view, updates = make({"a": "x" * 1000, "b": 1})
    with view.doc.transaction():
        view.assign({"a": "x" * 1000, "b": 2})
    assert len(updates) == 1
    assert len(updates[0]) < 100  # the long unchanged string is not rewritten


def test_arrays_keep_their_common_head_and_tail() -> None:
    view, _ = make({"list": ["a", "b", "c", "d"]})
    with view.doc.transaction():
        view.assign({"list": ["a", "x", "y", "d"]})
    assert view.read() == {"list": ["a", "x", "y", "d"]}
    # Concurrent insertion at the head by someone else survives the replacement.
    other: Doc[Any] = Doc()
    other.apply_update(view.doc.get_update())
    other_list: Array[Any] = other.get("data", type=Map)["list"]
    state = view.doc.get_state()
    with view.doc.transaction():
        view.assign({"list": ["a", "x", "y", "d", "e"]})
    other_list.insert(0, "first")
    other.apply_update(view.doc.get_update(other.get_state()))
    view.doc.apply_update(other.get_update(state))
    assert view.read()["list"] == ["first", "a", "x", "y", "d", "e"]
    assert normalize(other.get("data", type=Map).to_py()) == view.read()


def test_nested_objects_in_arrays_are_edited_in_place() -> None:
    view, updates = make({"list": [{"name": "a", "big": "y" * 500}]})
    with view.doc.transaction():
        view.assign({"list": [{"name": "b", "big": "y" * 500}]})
    assert view.read() == {"list": [{"name": "b", "big": "y" * 500}]}
    assert len(updates[0]) < 100


def test_a_text_made_by_yjs_is_edited_in_place_across_multibyte_characters() -> None:
    view, _ = make()
    with view.doc.transaction():
        view.data["t"] = Text("añb😀c")
    with view.doc.transaction():
        view.assign({"t": "añXb😀Yc"})
    assert isinstance(view.data["t"], Text)
    assert view.read() == {"t": "añXb😀Yc"}
    with view.doc.transaction():
        view.assign({"t": "😀"})
    assert view.read() == {"t": "😀"}


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7396, Appendix A (the cases whose target and patch are objects)
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc_7396_examples(
    target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
) -> None:
    view, _ = make(target)
    with view.doc.transaction():
        view.patch(patch)
    assert view.read() == result


def test_three_way_merge_applies_only_the_writers_changes() -> None:
    base = {"a": 1, "b": 1, "n": {"x": 1, "y": 1}, "gone": True}
    view, _ = make(base)
    with view.doc.transaction():  # someone else, since base
        view.patch({"b": 2, "n": {"y": 2}})
    with view.doc.transaction():  # our writer read base, changed a and n.x, removed gone
        view.merge(base, {"a": 5, "b": 1, "n": {"x": 5, "y": 1}})
    assert view.read() == {"a": 5, "b": 2, "n": {"x": 5, "y": 2}}


def test_delete_sets_the_tombstone_and_a_write_clears_it() -> None:
    view, _ = make({"a": 1})
    with view.doc.transaction():
        view.delete()
    assert view.deleted and view.read() == {}
    with view.doc.transaction():
        view.patch({"b": 2})
    assert not view.deleted and view.read() == {"b": 2}


def test_parse_object_refuses_what_yjs_cannot_hold() -> None:
    assert parse_object(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    for body, message in [
        (b"[]", "must be a JSON object"),
        (b"{", "not valid JSON"),
        (b'{"a": 9007199254740992}', "outside"),
        (b'{"a": -9007199254740992}', "outside"),
        (b'{"a": Infinity}', "not valid JSON"),
        (b'{"a": ' * 70 + b"1" + b"}" * 70, "deeper"),
    ]:
        with pytest.raises(InvalidBody, match=message):
            parse_object(body)


def test_json_equal_is_type_aware() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal(0, False)
    assert not json_equal(None, 0)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
