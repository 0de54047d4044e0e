"""Session fixtures starting the real schedulers the conformance suites compare the gate with."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conformance.slurm_gate import GateProbe
from tests.conformance.slurm_lab import MYSQL_HOST, MYSQL_PORT, SlurmLab, missing_binaries
from tests.support import wait_port


@pytest.fixture(scope="session")
def slurm_lab() -> Iterator[SlurmLab]:
    """A real Slurm 22.05 cluster on loopback (see ``slurm_lab``), shared by the test run."""
    missing = missing_binaries()
    if missing:
        # `make test` installs them (Makefile target `conformance-tools`); only a machine without
        # the Debian packages gets here, and it says so loudly.
        pytest.skip(
            f"SLURM CONFORMANCE NOT RUN: missing {', '.join(missing)} "
            "(install: make conformance-tools)"
        )
    try:
        wait_port(MYSQL_PORT, MYSQL_HOST, timeout=5)
    except TimeoutError:
        if shutil.which("mariadbd") is None:
            pytest.skip(
                f"SLURM CONFORMANCE NOT RUN: no MariaDB on {MYSQL_HOST}:{MYSQL_PORT} and no "
                "mariadbd to start one for slurmdbd (install: make conformance-tools)"
            )
    lab = SlurmLab().start()
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def slurm_probe(
    slurm_lab: SlurmLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GateProbe]:
    """A real ``gatekeeper serve`` with a Slurm route to the lab's slurmrestd."""
    probe = GateProbe(slurm_lab, tmp_path_factory.mktemp("slurm-gate"))
    try:
        yield probe
    finally:
        probe.stop()
        slurm_lab.cancel_all()
