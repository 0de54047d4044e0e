"""The ``gatekeeper`` command line: serve, check, policy, entities, audit, inventory, demo.

The commands, their options and exit statuses are described in docs/reference.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

import orjson

from .errors import ConfigError

DEFAULT_CONFIG = "gatekeeper.yaml"


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("GATEKEEPER_CONFIG") or DEFAULT_CONFIG)


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _fail_config(exc: ConfigError) -> int:
    print(f"gatekeeper: configuration error:\n{exc}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------ commands


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(_config_path(args))


def cmd_check(args: argparse.Namespace) -> int:
    from .check import decide_offline
    from .config import load_config
    from .runtime import Runtime

    try:
        with open(args.request, "rb") as fh:
            raw = fh.read(32 * 1024 * 1024 + 1)
        if len(raw) > 32 * 1024 * 1024:
            raise ValueError("request file larger than 32 MiB")
        payload = orjson.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("the request file must hold a JSON object")
    except (OSError, ValueError) as exc:
        print(f"gatekeeper check: bad request file {args.request}: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(_config_path(args))
    except ConfigError as exc:
        return _fail_config(exc)

    async def run() -> dict[str, Any]:
        runtime = Runtime(cfg)
        await runtime.start(with_audit=False)
        try:
            return await decide_offline(
                runtime, payload, consume=args.consume, skip_quota=args.no_quota
            )
        finally:
            await runtime.close()

    try:
        decision = asyncio.run(run())
    except ConfigError as exc:
        return _fail_config(exc)
    except ValueError as exc:
        print(f"gatekeeper check: bad request description: {exc}", file=sys.stderr)
        return 2
    _print_json(decision)
    return 0


def cmd_policy_validate(args: argparse.Namespace) -> int:
    from .config import Config, load_config
    from .policy import load_policy_set
    from .policy.sources import unprovided_reads

    files: list[str] = list(args.files)
    shadow: list[str] = []
    default_action = "deny"
    cfg: Config | None = None
    if not files or args.config:  # with files only, the deployment's sources are unknown
        try:
            cfg = load_config(_config_path(args))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    if not files and cfg is not None:
        files, shadow, default_action = (
            list(cfg.policy.files),
            list(cfg.policy.shadow),
            cfg.policy.default_action,
        )
    try:
        policy = load_policy_set(files, shadow=shadow, default_action=default_action)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} error(s)", file=sys.stderr)
        return 1
    warnings = unprovided_reads(policy, cfg.geoip) if cfg is not None else []
    for line in warnings:
        print(line)
    if warnings and args.strict:
        print(f"{len(warnings)} warning(s), --strict", file=sys.stderr)
        return 1
    tail = f", {len(warnings)} warning(s)" if warnings else ""
    print(f"ok: {len(files)} file(s), {len(policy.rules)} rule(s), version {policy.version}{tail}")
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    from .policy.testing import run_tests

    directory = args.dir or os.path.join("policies", "tests")
    try:
        results = run_tests(directory)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    failed = 0
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        print(f"{mark} {result.name}" + ("" if result.passed else f": {result.message}"))
        failed += 0 if result.passed else 1
    print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if failed == 0 and results else 1


def cmd_entities_show(args: argparse.Namespace) -> int:
    from .config import load_config
    from .ownership import load_registry

    try:
        cfg = load_config(_config_path(args))
        registry = load_registry(cfg.entities)
    except ConfigError as exc:
        return _fail_config(exc)
    profile = registry.profile(args.id)
    _print_json(profile.to_json())
    return 0 if profile.known else 1


def cmd_entities_diff(args: argparse.Namespace) -> int:
    """Re-screening offline: the changes the configured entity data brings over ``--before``."""
    from .ownership.diffcli import run_diff

    return run_diff(_config_path(args), args.before, as_of=args.as_of)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .audit.verify import verify_files

    report = verify_files(args.files, public_key=args.public_key)
    for torn in report.torn_lines:
        print(f"warning: torn line (a crash mid-write): {torn}", file=sys.stderr)
    for line in report.breaks:
        print(line)
    if report.unforwarded:
        print(f"note: {report.unforwarded} request(s) refused unforwarded after failed commits")
    print(report.summary())
    return 0 if report.ok else 1


def cmd_audit_tail(args: argparse.Namespace) -> int:
    from .audit.tail import tail

    source: str | tuple[str, str]
    if args.file:
        source = args.file
    else:
        from .config import load_config

        try:
            cfg = load_config(_config_path(args))
        except ConfigError as exc:
            return _fail_config(exc)
        streams = [s for s in cfg.audit.sinks if s.type == "redis_stream" and s.url]
        files = [s for s in cfg.audit.sinks if s.type == "file" and s.path]
        if streams:  # the stream carries every replica's records
            source = (str(streams[0].url), streams[0].stream)
        elif files:
            path = str(files[0].path)
            if cfg.workers > 1:
                stem, ext = os.path.splitext(path)
                path = f"{stem}.w0{ext or '.jsonl'}"
                print(f"gatekeeper: following worker 0 only ({path}); use --file", file=sys.stderr)
            source = path
        else:
            print("gatekeeper: no file or redis_stream audit sink configured", file=sys.stderr)
            return 2
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(
            tail(
                source,
                action=args.action,
                tenant=args.tenant,
                as_json=args.json,
                follow=not args.no_follow,
            )
        )
    return 0


def cmd_inventory_import(args: argparse.Namespace) -> int:
    from .inventory_import import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(serve=args.serve, out_dir=args.out)


# -------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatekeeper", description="Export-control gate for GPU job submission."
    )
    parser.add_argument("--log-level", default=os.environ.get("GATEKEEPER_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", help="config file (default ./gatekeeper.yaml, env GATEKEEPER_CONFIG)"
        )
        return p

    p = with_config(sub.add_parser("serve", help="run the proxy and admin listener"))
    p.set_defaults(func=cmd_serve)

    p = with_config(sub.add_parser("check", help="decide one request offline"))
    p.add_argument("request", help="REQUEST.json")
    # Default: quota is read, nothing taken; the answer is the one the live gate would give now.
    taking = p.add_mutually_exclusive_group()
    taking.add_argument(
        "--consume", action="store_true", help="consume quota as a live request would"
    )
    taking.add_argument(
        "--no-quota", action="store_true", help="skip the quota stage (no store is asked)"
    )
    p.set_defaults(func=cmd_check)

    policy = sub.add_parser("policy", help="validate and test policy files").add_subparsers(
        dest="policy_command", required=True
    )
    p = with_config(policy.add_parser("validate", help="load and compile policy files"))
    p.add_argument("files", nargs="*")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when a rule reads an attribute no source has"
    )
    p.set_defaults(func=cmd_policy_validate)
    p = policy.add_parser("test", help="run policy test cases")
    p.add_argument("dir", nargs="?")
    p.set_defaults(func=cmd_policy_test)

    entities = sub.add_parser("entities", help="inspect the entity registry").add_subparsers(
        dest="entities_command", required=True
    )
    p = with_config(entities.add_parser("show", help="print an entity's ownership profile"))
    p.add_argument("id")
    p.set_defaults(func=cmd_entities_show)
    p = with_config(
        entities.add_parser(
            "diff", help="print the entities the configured data changes over an older version"
        )
    )
    p.add_argument(
        "--before",
        nargs="+",
        required=True,
        help="the older data: a directory holding files named like the configured sources, "
        "or one file per source (matched by file name, else in order)",
    )
    p.add_argument("--as-of", help="judge holdings on this day (YYYY-MM-DD; default today)")
    p.set_defaults(func=cmd_entities_diff)

    audit = sub.add_parser("audit", help="verify and follow the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    p = audit.add_parser("verify", help="check hash chains and seals")
    p.add_argument("files", nargs="+")
    p.add_argument("--public-key", help="Ed25519 public key (PEM) to check seals")
    p.set_defaults(func=cmd_audit_verify)
    p = with_config(audit.add_parser("tail", help="follow the audit stream"))
    p.add_argument("--action")
    p.add_argument("--tenant")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.add_argument("--no-follow", action="store_true", help="print what exists and stop")
    p.add_argument("--file", help="follow this audit file instead of the configured sink")
    p.set_defaults(func=cmd_audit_tail)

    inventory = sub.add_parser("inventory", help="build the inventory").add_subparsers(
        dest="inventory_command", required=True
    )
    p = inventory.add_parser(
        "import", help="print the inventory: section read from a Slurm cluster's slurmrestd"
    )
    p.add_argument("--slurmrestd", metavar="URL", help="slurmrestd's base URL")
    p.add_argument("--version", help="slurmrestd API version (default v0.0.38)")
    p.add_argument("--user", help="X-SLURM-USER-NAME (default: the current user)")
    p.add_argument("--token-file", help="file holding the JWT (default: $SLURM_JWT)")
    p.add_argument("--nodes-json", metavar="FILE", help="a saved GET .../nodes answer")
    p.add_argument("--partitions-json", metavar="FILE", help="a saved GET .../partitions answer")
    p.add_argument("--model", action="append", metavar="TYPE=MODEL",
                   help="catalog model of a gres type (repeatable)")  # fmt: skip
    p.add_argument("--default-model", metavar="MODEL",
                   help="catalog model of untyped and uncatalogued GPUs")  # fmt: skip
    p.add_argument("--shared", action="append", metavar="PARTITION",
                   help="a partition whose OverSubscribe is not EXCLUSIVE, where slurmrestd does "
                   "not say (repeatable)")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="write the YAML here instead of stdout")
    p.set_defaults(func=cmd_inventory_import)

    p = sub.add_parser("demo", help="run the built-in scenario")
    p.add_argument("--serve", action="store_true", help="keep the gate and scheduler running")
    p.add_argument("--out", default="demo-out", help="where the audit file and metrics go")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
