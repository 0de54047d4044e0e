"""Tamper-evident audit trail (docs/reference.md): records, hash chain, seals, sinks, verify, tail.

``record`` builds and hashes records, ``log.AuditLog`` group-commits them to ``sinks``, ``seal``
signs chain heads, ``verify`` checks files offline, ``tail`` follows a file or a Redis stream.
"""
