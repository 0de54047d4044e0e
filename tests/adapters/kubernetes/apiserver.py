"""A stand-in Kubernetes API server for the client tests: stores objects, serves GET, POST, PUT,
PATCH (merge, strategic merge, JSON patch) and the ``/scale`` subresource of stored objects;
``dryRun=All`` stores nothing, any other ``dryRun`` is 422 (as the API server's validation).
Every stored change gives the object the next ``resourceVersion``, as the API server does.

Run as ``python -m tests.adapters.kubernetes.apiserver --port N --log FILE``; every request is
appended to FILE as one JSON line (method, path, content type, whether it carried a bearer token).
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from aiohttp import web

from gatekeeper.adapters.kubernetes.patch import apply_patch


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip
    return web.json_response(body, status=code)


def _split(path: str) -> tuple[str, str | None, str | None]:
    """(collection path, name, subresource) of a namespaced resource path."""
    segs = path.strip("/").split("/")
    i = segs.index("namespaces") + 3  # .../namespaces/<ns>/<resource>
    collection = "/" + "/".join(segs[:i])
    name = segs[i] if len(segs) > i else None
    sub = segs[i + 1] if len(segs) > i + 1 else None
    return collection, name, sub


def build_app(log_path: str) -> web.Application:
    store: dict[str, dict[str, Any]] = {}

    def log(request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        entry = {"method": request.method, "path": request.path,
                 "content_type": request.content_type, "bearer": auth.startswith("Bearer ")}  # fmt: skip
        with open(log_path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def bump(obj: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(int(old["metadata"]["resourceVersion"]) + 1)
        return obj

    def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace"),
                             "resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
                "status": {"replicas": 0}}  # fmt: skip

    async def handle(request: web.Request) -> web.Response:
        log(request)
        collection, name, sub = _split(request.path)
        key = f"{collection}/{name}"
        body = await request.read()
        # As the API server: any dryRun value other than All is 422 Invalid; a dry run stores
        # nothing (it answers what it would have stored).
        dry = request.query.getall("dryRun", [])
        if any(v != "All" for v in dry):
            return _status(422, "Invalid", f"dryRun: Unsupported value: {dry!r}")
        target = {} if dry else store
        if request.method == "POST" and name is None:
            obj = json.loads(body)
            meta = obj.setdefault("metadata", {})
            if "name" not in meta and "generateName" in meta:  # as the API server: a suffix
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["uid"] = str(uuid.uuid4())
            obj["metadata"]["resourceVersion"] = "1"
            target[f"{collection}/{obj['metadata']['name']}"] = obj
            return web.json_response(obj, status=201)
        if key not in store:
            return _status(404, "NotFound", f"{name} not found")
        obj = store[key]
        if sub == "scale":
            scale = scale_of(obj)
            if request.method == "PATCH":
                scale = apply_patch(scale, json.loads(body), request.content_type)
            elif request.method == "PUT":
                scale = json.loads(body)
            if request.method in ("PATCH", "PUT"):
                obj.setdefault("spec", {})["replicas"] = scale["spec"]["replicas"]
                bump(obj, obj)
            return web.json_response(scale_of(obj))
        if sub is not None:
            return _status(404, "NotFound", f"no subresource {sub}")
        if request.method == "GET":
            return web.json_response(obj)
        if request.method == "PUT":
            obj = json.loads(body)
        elif request.method == "PATCH":
            obj = apply_patch(obj, json.loads(body), request.content_type)
        if not dry:
            store[key] = bump(obj, store[key])
        return web.json_response(obj)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    web.run_app(build_app(args.log), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
