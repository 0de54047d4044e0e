"""Tamper tests: what the chain alone catches, and what needs the seals' public key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.record import canonical
from gatekeeper.audit.seal import Sealer, load_private_key
from gatekeeper.audit.verify import verify_files
from gatekeeper.errors import ConfigError
from tests.audit.helpers import body, file_cfg, make_keys, read_lines, rechain, write_lines


async def _write(path: Path, n: int, *, key: str | None = None, batch: int = 1) -> None:
    log = AuditLog(file_cfg(path, signing_key=key), replica="gk-0")
    await log.start()
    for start in range(0, n, batch):
        await asyncio.gather(*(log.append(body(i)) for i in range(start, min(n, start + batch))))
    await log.close()


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    asyncio.run(_write(path, 6))
    return path


@pytest.fixture
def sealed(tmp_path: Path) -> tuple[Path, str, str]:
    priv, pub = make_keys(tmp_path)
    path = tmp_path / "sealed.jsonl"
    asyncio.run(_write(path, 6, key=priv, batch=2))  # records 1-2 seal 3-4 seal 5-6 seal
    return path, priv, pub


def test_intact_chain_passes(chain: Path) -> None:
    r = verify_files([str(chain)])
    assert r.ok and r.records == 6 and r.first_error is None and not r.torn_tail


def test_edit_is_caught(chain: Path) -> None:
    lines = read_lines(chain)
    obj = json.loads(lines[2])
    obj["decision"]["action"] = "deny"
    lines[2] = canonical(obj) + b"\n"
    write_lines(chain, lines)
    r = verify_files([str(chain)])
    assert not r.ok and not r.intact
    assert r.first_error == f"{chain}:3: hash mismatch at seq 3: record edited"


def test_non_canonical_edit_is_caught(chain: Path) -> None:
    lines = read_lines(chain)
    # a duplicate key: json.loads keeps the last value, other parsers the first one
    lines[1] = lines[1][:-2] + b',"seq":2}\n'
    write_lines(chain, lines)
    r = verify_files([str(chain)])
    assert r.first_error is not None and "not canonical" in r.first_error
    assert r.first_error.startswith(f"{chain}:2:")


def test_deletion_is_caught(chain: Path) -> None:
    lines = read_lines(chain)
    del lines[3]
    write_lines(chain, lines)
    r = verify_files([str(chain)])
    assert not r.ok and r.first_error is not None
    assert r.first_error.startswith(f"{chain}:4: prev_hash of seq 5")


def test_deleting_the_first_record_is_caught(chain: Path) -> None:
    write_lines(chain, read_lines(chain)[1:])
    r = verify_files([str(chain)])
    assert r.first_error is not None and "chain starts at seq 2" in r.first_error
    assert verify_files([str(chain)], allow_partial=True).ok


def test_swap_is_caught(chain: Path) -> None:
    lines = read_lines(chain)
    lines[1], lines[4] = lines[4], lines[1]
    write_lines(chain, lines)
    r = verify_files([str(chain)])
    assert r.first_error is not None and r.first_error.startswith(f"{chain}:2: prev_hash")


def test_reorder_is_caught(chain: Path) -> None:
    lines = read_lines(chain)
    write_lines(chain, [lines[0], lines[2], lines[1], *lines[3:]])
    r = verify_files([str(chain)])
    assert r.first_error is not None and r.first_error.startswith(f"{chain}:2:")


def test_garbage_in_place_of_a_record_is_caught(chain: Path) -> None:
    lines = read_lines(chain)
    lines[2] = b"not json at all\n"
    write_lines(chain, lines)
    r = verify_files([str(chain)])
    assert r.first_error is not None and r.first_error.startswith(f"{chain}:4: prev_hash")


def test_rechained_rewrite_passes_the_bare_chain(chain: Path) -> None:
    """Why seals exist: a forger with write access recomputes every hash."""
    lines = read_lines(chain)
    obj = json.loads(lines[4])
    obj["decision"]["action"] = "deny"
    lines[4] = canonical(obj) + b"\n"
    write_lines(chain, rechain(lines))
    assert verify_files([str(chain)]).ok


def test_sealed_chain_passes_with_the_public_key(sealed: tuple[Path, str, str]) -> None:
    path, _, pub = sealed
    r = verify_files([str(path)], public_key=pub)
    assert r.ok and r.records == 6 and r.seals == 3 and r.unsealed_after is None


def test_forged_append_is_caught_with_the_key(sealed: tuple[Path, str, str]) -> None:
    path, _, pub = sealed
    lines = read_lines(path)
    last = json.loads(lines[-2])
    forged = {**body(7), "v": 1, "seq": 7, "ts": last["ts"], "replica": "gk-0",
              "prev_hash": last["hash"]}  # fmt: skip
    from gatekeeper.audit.record import chain_hash

    forged["hash"] = chain_hash(last["hash"], forged)
    write_lines(path, [*lines, canonical(forged) + b"\n"])
    assert verify_files([str(path)]).ok  # the chain alone cannot tell
    r = verify_files([str(path)], public_key=pub)
    assert not r.ok and r.intact and r.unsealed_after == 6 and r.unsealed == 1
    assert r.first_error == (
        f"{path}:10: 1 record(s) after seq 6 are not sealed (appended or rewritten tail?)"
    )


def test_rewritten_tail_with_recomputed_hashes_is_caught(sealed: tuple[Path, str, str]) -> None:
    path, _, pub = sealed
    lines = read_lines(path)  # r1 r2 S r3 r4 S r5 r6 S
    obj = json.loads(lines[6])
    obj["decision"]["action"] = "deny"
    lines[6] = canonical(obj) + b"\n"
    rewritten = rechain(lines)  # seals dropped, hashes recomputed
    write_lines(path, rewritten)
    r = verify_files([str(path)], public_key=pub)
    assert not r.ok and r.seals == 0 and r.unsealed_after == 0 and r.unsealed == 6


def test_rewritten_tail_keeping_old_seals_is_caught(sealed: tuple[Path, str, str]) -> None:
    path, _, pub = sealed
    lines = read_lines(path)
    obj = json.loads(lines[6])
    obj["decision"]["action"] = "deny"
    lines[6] = canonical(obj) + b"\n"
    records = rechain(lines)
    seals = [ln for ln in lines if b'"type":"seal"' in ln]
    write_lines(path, [*records[:2], seals[0], *records[2:4], seals[1], *records[4:], seals[2]])
    for key in (None, pub):  # even without the key: the last seal names another head
        r = verify_files([str(path)], public_key=key)
        assert r.first_error is not None and r.first_error.startswith(f"{path}:9: seal for seq 6")


def test_forged_seal_with_another_key_is_caught(
    sealed: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, _, pub = sealed
    other = tmp_path / "other"
    other.mkdir()
    forger_priv, _ = make_keys(other)
    lines = read_lines(path)
    obj = json.loads(lines[6])
    obj["decision"]["action"] = "deny"
    lines[6] = canonical(obj) + b"\n"
    records = rechain(lines)
    sealer = Sealer(load_private_key(forger_priv), "gk-0")
    head = json.loads(records[-1])
    forged_seal = canonical(sealer.seal(6, head["hash"], head["ts"])) + b"\n"
    write_lines(path, [*records, forged_seal])
    assert verify_files([str(path)]).ok  # structure fine
    r = verify_files([str(path)], public_key=pub)
    assert r.first_error == f"{path}:7: seal for seq 6 has an invalid signature (forged)"


def test_tampered_seal_signature_is_caught(sealed: tuple[Path, str, str]) -> None:
    path, _, pub = sealed
    lines = read_lines(path)
    seal = json.loads(lines[2])
    seal["ts"] = "2000-01-01T00:00:00.000000Z"  # the signature covers every field but sig
    lines[2] = canonical(seal) + b"\n"
    write_lines(path, lines)
    r = verify_files([str(path)], public_key=pub)
    assert r.first_error == f"{path}:3: seal for seq 2 has an invalid signature (forged)"


def test_unsealed_chain_with_a_key_is_reported(chain: Path, tmp_path: Path) -> None:
    _, pub = make_keys(tmp_path)
    r = verify_files([str(chain)], public_key=pub)
    assert not r.ok and r.unsealed_after == 0 and r.unsealed == 6


def test_private_key_file_also_works_for_verify(sealed: tuple[Path, str, str]) -> None:
    path, priv, _ = sealed
    assert verify_files([str(path)], public_key=priv).ok


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"x" * 70000,
    ],
)
def test_bad_public_key_is_a_config_error(tmp_path: Path, chain: Path, content: bytes) -> None:
    key = tmp_path / "bad.pem"
    key.write_bytes(content)
    with pytest.raises(ConfigError):
        verify_files([str(chain)], public_key=str(key))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    r = verify_files([str(tmp_path / "nope.jsonl")])
    assert not r.ok and r.first_error is not None and "cannot read" in r.first_error


def test_hostile_lines_do_not_crash_the_verifier(tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    write_lines(path, [b"[1,2]\n", b'{"v":1}\n', b"\xff\xfe\n", b"{" * 5000 + b"\n"])
    r = verify_files([str(path)])
    assert not r.ok and r.first_error is not None
    assert r.first_error.startswith(f"{path}:2: ")
    path.write_bytes(b"[" * 100_000 + b"\n" + b"{" * 100_000)
    r = verify_files([str(path)])
    assert r.torn_tail and r.torn_lines == [f"{path}:1"] and r.records == 0
    path.write_bytes(b'{"v":1,"seq":true,"hash":"x","prev_hash":"y"}\n')
    r = verify_files([str(path)])
    assert r.first_error is not None and "integer seq" in r.first_error
