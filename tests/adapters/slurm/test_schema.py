"""The field tables against Slurm's own specifications, and the documentation against the code."""

from __future__ import annotations

import json

from gatekeeper.adapters.slurm import schema
from gatekeeper.adapters.slurm.doc import render_tables
from tests.support import repo_root

FIELDS = json.loads((repo_root() / "tests" / "data" / "slurm" / "job_fields.json").read_text())

# Names v0.0.37's specification lists that its plugin's option table spells otherwise (``cpu_binding
# hint``, ``msc_label``, ``time minimum``) or disables (``cpu_binding``): slurmrestd refuses them,
# and so do we. v0.0.38 fixed the spellings.
SPEC_NOT_ACCEPTED = {
    "v0.0.37": {"cpu_binding", "cpu_binding_hint", "mcs_label", "time_minimum"},
    "v0.0.38": {"cpu_binding"},
}


def test_data_parser_tables_equal_the_generated_specifications() -> None:
    for version in ("v0.0.41", "v0.0.42"):
        assert set(schema.VERSIONS[version]) == set(FIELDS["fields"][version]), version


def test_data_parser_tables_equal_slurms_job_description_parsers() -> None:
    """v0.0.39 and v0.0.40 against the ``JOB_DESC_MSG`` parser array of their data_parser
    plugins: every field the parser reads is classed, and the table holds none it does not read
    (a member path such as ``rlimits/cpu`` belongs to its object field, ``rlimits``)."""
    for version in ("v0.0.39", "v0.0.40"):
        parsed = {path.split("/")[0] for path in FIELDS["fields"][version]}
        assert set(schema.VERSIONS[version]) == parsed, version


def test_option_tables_accept_what_the_specification_lists() -> None:
    for version in ("v0.0.37", "v0.0.38"):
        table = schema.VERSIONS[version]
        refused = {
            name for name in FIELDS["fields"][version] if table.get(name) in (None, schema.DISABLED)
        }
        assert refused == SPEC_NOT_ACCEPTED[version], version


def test_every_version_knows_the_gpu_fields_of_its_era() -> None:
    for version in ("v0.0.37", "v0.0.38"):
        table = schema.VERSIONS[version]
        assert table["gpus_per_node"] == schema.GPUS_NODE and table["gres"] == schema.GRES
        assert "tres_per_node" not in table
    for version in ("v0.0.39", "v0.0.40", "v0.0.41", "v0.0.42"):
        table = schema.VERSIONS[version]
        assert table["tres_per_node"] == schema.TRES_NODE and "gpus_per_node" not in table
        assert table["required_nodes"] == schema.HOSTS and table["shared"] == schema.SHARED


def test_every_role_is_described_and_every_gpu_role_has_a_unit() -> None:
    roles = {role for table in schema.VERSIONS.values() for role in table.values()}
    roles |= set(schema.SBATCH_ROLES.values())
    text = render_tables()
    for role in roles:
        assert f"| {role}: " in text, role
    assert set(schema.GPU_ROLES) <= roles


def test_sbatch_roles_name_real_sbatch_options() -> None:
    assert set(schema.SBATCH_ROLES) <= set(schema.SBATCH_ARGS)
    assert set(schema.SBATCH_SHORT.values()) <= set(schema.SBATCH_ARGS)


def test_documentation_holds_the_tables_as_the_code_has_them() -> None:
    doc = (repo_root() / "docs" / "measurement.md").read_text()
    assert render_tables() in doc
