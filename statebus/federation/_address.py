"""Share lines: ``<node-id>@<host>[:<port>]``, how a node tells friends where to dial it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidNodeId
from ..identity import NodeId, parse_node_id
from ..settings import DEFAULT_PORT


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Whom to dial and where; the id is checked (checksum) when parsed."""

    node_id: NodeId
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        """Parse a share line; :class:`InvalidNodeId` says what is wrong with it."""
        text = text.strip()
        node, at, where = text.partition("@")
        if not at or not node or not where:
            raise InvalidNodeId(f"a peer is ID@HOST[:PORT], got {text[:120]!r}")
        node_id = parse_node_id(node)
        host, port = where, DEFAULT_PORT
        if where.startswith("["):  # [ipv6]:port
            end = where.find("]")
            if end < 0:
                raise InvalidNodeId(f"unclosed '[' in the address {where!r}")
            host, rest = where[1:end], where[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise InvalidNodeId(f"expected ':PORT' after ']' in {where!r}")
                port = _port(rest[1:], where)
        elif ":" in where:
            host, _, port_text = where.rpartition(":")
            port = _port(port_text, where)
        if not host or any(c.isspace() or c in "/?#@" for c in host):
            raise InvalidNodeId(f"{host!r} is not a host name or address")
        return cls(node_id, host, port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.node_id}@{host}:{self.port}"


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidNodeId(f"{text!r} is not a port number (1-65535) in {where!r}")
    return int(text)
