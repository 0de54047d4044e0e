"""``header_names`` as a pre-filter: it never misses a name a screen or a lookup would find.

The intake skips the override refusal, the ``X-Gatekeeper-*`` strip, the purpose read, the
``Forwarded`` read and the ``Content-Encoding`` check when ``header_names`` says no such name is
present. Each must then be what the exact check (``str.lower`` per name) or multidict's
case-insensitive lookup would conclude, for names ``gatekeeper check`` can carry (any Unicode:
the HTTP parser admits only ASCII tokens).
"""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gatekeeper.errors import BadRequest
from gatekeeper.policy.purpose import PURPOSE_HEADER
from gatekeeper.proxy.headers import (
    GATE_MARK,
    OVERRIDE_HEADERS,
    header_names,
    is_gate_header,
    refuse_override_headers,
    strip_client_headers,
)

LOOKED_UP = ("Forwarded", "Content-Encoding", PURPOSE_HEADER)
# Spellings that fold (or nearly fold) to an ASCII name: Kelvin sign, long s, dotted I, Sigma.
ODD = ("\u212a", "\u017f", "\u0130", "\u03a3", "\uff38", "\u2010")


def _spellings(name: str) -> list[str]:
    out = {name, name.upper(), name.swapcase(), name.replace("-", "_"), " " + name, name + "\n"}
    out |= {name.replace(c, o) for c in "kKsSiIxX-" for o in ODD if c in name}
    out |= {"a\n" + name, name + "\nb", name[:-1], name + "x"}
    return sorted(out)


NAMES = [s for n in (*LOOKED_UP, *OVERRIDE_HEADERS, "X-Gatekeeper-Tenant") for s in _spellings(n)]


@pytest.mark.parametrize("name", NAMES)
def test_the_pre_filter_misses_no_name_multidict_or_a_screen_finds(name: str) -> None:
    headers = CIMultiDictProxy(CIMultiDict([("Host", "h"), (name, "v"), ("Accept", "*")]))
    names = header_names(headers)
    for looked_up in LOOKED_UP:  # multidict's own case-insensitive match
        if headers.getall(looked_up, ()):
            assert f"\n{looked_up.lower()}\n" in names
    if name.lower().replace("_", "-") in OVERRIDE_HEADERS:
        with pytest.raises(BadRequest):
            refuse_override_headers(headers, names)
    else:
        refuse_override_headers(headers, names)
    if is_gate_header(name):
        assert GATE_MARK in names
        assert name not in strip_client_headers(headers, names)
    assert strip_client_headers(headers, names).keys() == strip_client_headers(headers).keys()
