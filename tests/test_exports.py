"""The public surface is stated, and only what is stated is public."""

from __future__ import annotations

import inspect

import statebus


def test_exported_members() -> None:
    exported = {
        name
        for name in dir(statebus)
        if not name.startswith("_") and not inspect.ismodule(getattr(statebus, name))
    }
    assert exported == set(statebus.__all__) - {"__version__"}
    for name in statebus.__all__:
        assert getattr(statebus, name) is not None
