"""A twitter clone built only on the node's public HTTP surface.

Its pages (``index.html``, ``app.js``, ``app.css``) are served under ``/_app/``
and at ``/`` to a browser; the one piece of Python is the computed timeline
(:mod:`.timeline`), which the node defines when it serves this app.
"""

from __future__ import annotations

from statebus.computed import Computed

from . import timeline


def define(computed: Computed) -> None:
    computed.define(timeline.KEY, timeline.timeline)
