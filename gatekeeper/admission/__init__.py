"""The admission webhook: the third face on the decision core, beside the proxy and ``check``.

The Kubernetes API server sends every write it is about to store (``AdmissionReview``
``admission.k8s.io/v1``) to ``POST /v1/admission`` on its own TLS listener. ``review.py`` turns the
review into a plain request (method, API path, the object as the body, who is behind it);
``decide.py`` runs the same pipeline the proxy runs; ``server.py`` writes the audit record and
answers with an ``AdmissionReview`` carrying the request's ``uid``, ``allowed`` and a ``status``
with the reason and decision id. The webhook converts and acts; it never decides on its own.
"""

from __future__ import annotations

from .server import ADMISSION_PATH, build_admission_app, start_admission

__all__ = ["ADMISSION_PATH", "build_admission_app", "start_admission"]
