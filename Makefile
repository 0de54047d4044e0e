# gatekeeper — set-up, checks, demo and benchmarks. Every target creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install demo test lint typecheck unit policy-test tools conformance-tools ray-tools bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gatekeeper demo

# Debian tools some tests use (promtool checks the alert rules); installed when missing.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || echo "warning: could not install promtool; its test will fail"; }

# Debian's Slurm (22.05) for the conformance suite (tests/conformance): munged, slurmdbd,
# slurmctld, slurmd, slurmrestd with its JWT plugin, and the clients; installed when missing.
# slurmdbd keeps its records in MariaDB on 127.0.0.1:3306 (root, no password) or, where none
# runs, in a private mariadbd the lab starts.
SLURM_DEBS := munge slurmctld slurmd slurmrestd slurmdbd slurm-client slurm-wlm-jwt-plugin mariadb-server
conformance-tools:
	@for b in munged slurmctld slurmd slurmrestd slurmdbd sbatch mariadbd; do command -v $$b >/dev/null 2>&1 || missing=1; done; \
	  dpkg -s slurm-wlm-jwt-plugin >/dev/null 2>&1 || missing=1; \
	  test -z "$$missing" || { \
	  echo "installing Slurm for the conformance suite (Debian packages $(SLURM_DEBS))"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_DEBS) >/dev/null) \
	  || echo "warning: could not install Slurm; the Slurm conformance suite will be skipped"; }

# Ray from PyPI for the Ray conformance suite, in a virtualenv of its own (its pins stay out of the
# gate's); the tests drive its command line and HTTP API. About 500 MB; installed when missing.
RAY_SPEC    := ray[default,serve]==2.60.0
RAY_VENV    := .venv-ray
RAY_STAMP   := $(RAY_VENV)/.installed-$(shell echo '$(RAY_SPEC)' | sha1sum | cut -c1-12)
ray-tools:
	@test -e $(RAY_STAMP) || { \
	  echo "installing $(RAY_SPEC) into $(RAY_VENV) for the Ray conformance suite"; \
	  ($(PYTHON) -m venv $(RAY_VENV) && $(RAY_VENV)/bin/pip install --quiet '$(RAY_SPEC)' \
	   && touch $(RAY_STAMP)) \
	  || echo "warning: could not install Ray; the Ray conformance suite will be skipped"; }

lint: $(STAMP)
	$(VENV)/bin/ruff check gatekeeper tests bench
	$(VENV)/bin/ruff format --check gatekeeper tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

policy-test: $(STAMP)
	$(VENV)/bin/gatekeeper policy test policies/tests

# pytest exits 5 when it collects no test; make treats any non-zero status as failure.
unit: $(STAMP) tools conformance-tools ray-tools
	$(PY) -m pytest -q

test: lint typecheck policy-test unit

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	bench/run

clean:
	rm -rf $(VENV) $(RAY_VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
