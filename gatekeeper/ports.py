"""Free loopback ports for the demo (and the test and benchmark harnesses), never the same twice.

``bind(port 0)`` then close is the usual way to find a free port, but the kernel may hand the
same port to the next such call once the first socket is closed: 8 in 100,000 back-to-back pairs
here, which is enough for ``demo`` or a test to start its gate and its scheduler on one port now
and then. A process-wide record of the ports already handed out makes every answer distinct.
(Linux gives ``bind`` odd ports and outgoing ``connect`` even ones, so client connections made
meanwhile do not take them either.)
"""

from __future__ import annotations

import socket
import threading

_given: set[int] = set()
_lock = threading.Lock()
_ATTEMPTS = 64


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now and this process has not handed out."""
    with _lock:
        for _ in range(_ATTEMPTS):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
    raise OSError(f"no free port on {host} after {_ATTEMPTS} attempts")
