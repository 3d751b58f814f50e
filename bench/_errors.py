"""The bench's own errors.

BenchError
├── Unavailable     the system under test cannot be measured in this run (reported as a row)
└── ClientFailed    a load client crashed or broke its protocol
"""

from __future__ import annotations


class BenchError(Exception):
    """Something went wrong while benchmarking."""


class Unavailable(BenchError):
    """A system cannot be measured in this run; its rows say why instead of a figure."""


class ClientFailed(BenchError):
    """A load client crashed, timed out or printed something unexpected."""
