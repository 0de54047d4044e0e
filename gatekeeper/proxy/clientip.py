"""Which address is the client: the TCP peer, unless a trusted proxy vouches for another.

Only when the peer is inside ``trusted_proxies`` are ``X-Forwarded-For`` (preferred) or RFC 7239
``Forwarded`` read, right to left, skipping trusted hops; the first untrusted address is the client.
An unparsable hop ends the walk at the last address a trusted proxy gave us, so a client cannot
smuggle a fake address past one trusted hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MEMO_SIZE = 8192


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port or [v6]
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _forwarded_fors(values: Sequence[str]) -> list[str]:
    """The ``for=`` parameters of RFC 7239 Forwarded header values, in order."""
    out: list[str] = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, val = pair.strip().partition("=")
                if name.lower() == "for":
                    out.append(val)
    return out


class ClientIPResolver:
    """Resolves the client address from the peer and forwarding headers."""

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in trusted_proxies
        )
        self._is_trusted = lru_cache(maxsize=4096)(self._check_trusted)
        # resolve() is a pure function of its arguments and the trusted set; clients and load
        # balancers repeat the same (peer, header) pairs, and ipaddress parsing is ~10 us a hop.
        self._memo: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}

    def _check_trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr in net for net in self.trusted)

    def resolve(self, peer: str, xff: Sequence[str], forwarded: Sequence[str]) -> str:
        key = (peer, tuple(xff), tuple(forwarded))
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()  # bounded: a flood of distinct headers only costs re-parsing
            hit = self._memo[key] = self._resolve(peer, xff, forwarded)
        return hit

    def _resolve(self, peer: str, xff: Sequence[str], forwarded: Sequence[str]) -> str:
        peer_ip = _parse_ip(peer)
        if peer_ip is None:
            return peer
        if not self.trusted or not self._is_trusted(peer_ip):
            return str(peer_ip)
        if xff:
            hops = [h for v in xff for h in v.split(",")]
        elif forwarded:
            hops = _forwarded_fors(forwarded)
        else:
            return str(peer_ip)
        client = peer_ip
        for hop in reversed(hops):
            addr = _parse_ip(hop)
            if addr is None:
                break
            client = addr
            if not self._is_trusted(addr):
                break
        return str(client)
