# The README's two commands: `make run` (the main job) and `make test` (every gate).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit deploy-check bench clean

# setup.py compiles these (a stale build would shadow an edited .py): rebuild when they change,
# or when the list of them (lb/_compiled.py) does.
PXD := $(wildcard lb/*.pxd lb/http/*.pxd lb/proxy/*.pxd)
COMPILED := lb/_compiled.py lb/http/_speedups.pyx $(PXD) $(PXD:.pxd=.py)

$(STAMP): pyproject.toml setup.py $(COMPILED)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	./scripts/demo.sh

# lint-imports: the dependency contracts in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(PY) -m mypy --strict lb scaler

unit: $(STAMP)
	$(PY) -m pytest -W error -q tests/unit

# The alert rules and their tests (promtool comes with Debian's prometheus package; .ci/run
# installs it). Without promtool this says so and goes on, unless LB_REQUIRE_DEPLOY_TOOLS=1.
deploy-check:
	@if command -v promtool >/dev/null; then \
		promtool check rules deploy/prometheus/lb-rules.yml && \
		(cd deploy/prometheus && promtool test rules lb-rules.test.yml); \
	elif [ "$${LB_REQUIRE_DEPLOY_TOOLS:-0}" = 1 ]; then \
		echo "LB_REQUIRE_DEPLOY_TOOLS=1 but promtool is not installed" >&2; exit 1; \
	else echo "promtool not installed (apt-get install prometheus): alert rules not checked"; fi

test: lint typecheck deploy-check
	$(PY) -m pytest -W error -q
	@# The same L7 code as plain Python (setup.py compiles it where it can; see setup.py).
	LB_NO_EXTENSIONS=1 LB_REQUIRE_SPEEDUPS= $(PY) -m pytest -W error -q \
		tests/unit tests/integration/test_l7.py

# lb vs HAProxy vs nginx, memory and micro-benchmarks (~11 min); BENCH_ARGS=--quick for ~3 min.
bench: $(STAMP)
	$(PY) -c "import matplotlib, locust" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache run
