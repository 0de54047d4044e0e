"""A real webhook listener (TLS, aiohttp) on a real runtime, and AdmissionReviews shaped like the
Kubernetes documentation's example (``Dynamic Admission Control``: every field it shows)."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gatekeeper.admission import ADMISSION_PATH, start_admission
from gatekeeper.config import Config, parse_config_text
from gatekeeper.demo import DATA, _policies_dir
from gatekeeper.runtime import Runtime
from tests.adapters.kubernetes.stack import ApiServer
from tests.adapters.kubernetes.support import url_for
from tests.e2e.test_server import _self_signed
from tests.support import free_port

TENANTS = {
    "users": {"system:serviceaccount:lab:trainer": "frontier-labs"},
    "namespaces": {"team-a": "acme-sg", "lab": "frontier-labs", "ghost": "no-such-entity"},
}


def webhook_config(tmp: Path, **admission: Any) -> dict[str, Any]:
    """The shipped US pack and the demo entities; the webhook with its tenants."""
    cert, key = _self_signed(tmp)
    policies = _policies_dir()
    return {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "entities": {"sources": [{"path": str(DATA / "entities.yaml")}]},
        "geoip": {"country_db": "builtin"},
        "policy": {
            "files": [str(policies / "us-remote-access.yaml")],
            "gpus": str(policies / "gpus.yaml"),
            "default_action": "deny",
        },
        "quota": {"store": "memory"},
        "audit": {
            "durability": "buffered",
            "sinks": [{"type": "file", "path": str(tmp / "audit.jsonl")}],
        },
        "admission": {
            "host": "127.0.0.1",
            "port": free_port(),
            "tls": {"cert": str(cert), "key": str(key)},
            "tenants": TENANTS,
            "gpu_model": "H100-SXM",
            "max_hours": 24,
            **admission,
        },
    }


def review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    group: str,
    version: str,
    resource: str,
    namespace: str = "team-a",
    name: str = "",
    username: str = "alice@example.com",
    old: dict[str, Any] | None = None,
    sub_resource: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """An AdmissionReview request with the fields of the documentation's example."""
    kind = obj.get("kind", "") if obj else ""
    obj_group, _, obj_version = (obj or {}).get("apiVersion", f"{group}/{version}").rpartition("/")
    gvk = {"group": obj_group, "version": obj_version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    # A CONNECT carries its connect options (PodExecOptions, PodProxyOptions, ...) as the object
    # and no operation options.
    options_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}
    options = options_kind.get(operation)
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {
            "username": username,
            "uid": "014fbff9a07c",
            "groups": ["system:authenticated", "my-admin-group"],
            "extra": {"some-key": ["some-value1", "some-value2"]},
        },
        "object": obj,
        "oldObject": old,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options} if options else None,
        "dryRun": dry_run,
    }
    if sub_resource is not None:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def review_of(obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """A CREATE review of ``obj`` at its own group/version/resource."""
    from gatekeeper.adapters.kubernetes.kinds import plural

    group, _, version = obj["apiVersion"].rpartition("/")
    return review(obj, group=group, version=version, resource=plural(obj["kind"]), **kw)


@dataclass
class Webhook:
    cfg: Config
    runtime: Runtime
    url: str
    ssl: ssl.SSLContext
    session: aiohttp.ClientSession
    audit: Path

    async def send(
        self, body: Any, *, raw: bytes | None = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.session.post(
            self.url, data=data, headers={"Content-Type": ctype}, ssl=self.ssl
        ) as r:
            text = await r.read()
            return r.status, json.loads(text) if text else None

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        status, doc = await self.send(body)
        assert status == 200, doc
        assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
        assert doc["response"]["uid"] == body["request"]["uid"]
        return doc["response"]  # type: ignore[no-any-return]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line]

    def record(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The audit record of the decision behind ``answer``."""
        wanted = answer["auditAnnotations"]["decision-id"]
        return next(r for r in self.records() if r.get("decision_id") == wanted)

    def gpus(self, answer: dict[str, Any]) -> float | None:
        """The accelerators the decision behind ``answer`` measured (``None``: none measured),
        as its audit record and the answer's ``auditAnnotations`` both say."""
        compute = self.record(answer).get("compute")
        gpus = float(compute["gpus"]) if compute else None
        annotated = answer["auditAnnotations"].get("gpus")
        assert (float(annotated) if annotated is not None else None) == gpus, answer
        return gpus


@asynccontextmanager
async def stand_in_api(
    tmp: Path, objects: list[tuple[str, dict[str, Any]]]
) -> AsyncIterator[tuple[ApiServer, dict[str, Any]]]:
    """The stand-in API server holding ``objects`` ((namespace, object) pairs), and the
    ``admission`` settings that make the webhook read from it as its service account."""
    api = ApiServer(tmp)
    token = tmp / "token"
    token.write_text("service-account-token\n")
    base = f"http://127.0.0.1:{api.port}"
    try:
        async with aiohttp.ClientSession() as s:
            for namespace, obj in objects:
                async with s.post(base + url_for(obj, namespace), json=obj) as r:
                    assert r.status == 201, await r.text()
        yield api, {"api_server": base, "token_file": str(token)}
    finally:
        api.stop()


@asynccontextmanager
async def running_webhook(tmp: Path, **admission: Any) -> AsyncIterator[Webhook]:
    raw = webhook_config(tmp, **admission)
    path = tmp / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = parse_config_text(path.read_text(), str(path), str(tmp))
    runtime = Runtime(cfg, replica="webhook-test")
    await runtime.start()
    runner = await start_admission(cfg, runtime, reuse_port=False)
    assert runner is not None and cfg.admission is not None
    ctx = ssl.create_default_context(cafile=raw["admission"]["tls"]["cert"])
    try:
        async with aiohttp.ClientSession() as session:
            yield Webhook(
                cfg,
                runtime,
                f"https://127.0.0.1:{cfg.admission.port}{ADMISSION_PATH}",
                ctx,
                session,
                tmp / "audit.jsonl",
            )
    finally:
        await runner.cleanup()
        await runtime.close()
