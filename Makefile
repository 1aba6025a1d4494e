# Every target creates the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-dates lint format bench demo demo-alerts devstack clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg setup.py
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Only the fault-injection suite (tests/reliability/): the whole chain, counted on the
# archive. `make test` runs it too.
.PHONY: test-reliability
test-reliability: $(VENV)/.installed
	$(BIN)/python -m pytest -m reliability $(PYTEST_ARGS)

# The tests that handle dates (windows, keys, expiry, the archive's partitions and
# queries) again with the clock at a year end and at a leap day (libfaketime, ticking
# from there; child processes continue the parent's clock). The suites that drive real
# processes for a long time (rsyslogd, kill -9, the fault injection, the demo) count
# sequence numbers, not dates, and are left out to keep CI short.
DATES_PATHS ?= tests/ingest tests/ship tests/lambda tests/alerts tests/admin tests/deploy \
	tests/pipeline tests/test_contract.py
DATES_MARKERS ?= not rsyslog and not reliability
test-dates: $(VENV)/.installed
	@command -v faketime >/dev/null || { echo "faketime is missing: apt-get install faketime" >&2; exit 1; }
	for d in "2027-12-31 23:59:50" "2028-02-29 23:59:30"; do \
	    echo "--- the date-handling tests at $$d" >&2; \
	    FAKETIME_DONT_RESET=1 faketime -f "@$$d" $(BIN)/python -m pytest -q -p no:cacheprovider \
	        -m "$(DATES_MARKERS)" $(PYTEST_ARGS) $(DATES_PATHS) || exit $$?; \
	done

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

# The whole pipeline on this machine (devstack/demo.py), then everything stopped.
demo: $(VENV)/.installed
	$(BIN)/python -m devstack.demo $(DEMO_ARGS)

# The demo, then the alert story: a digest, a silent device and its return (about 30 s).
demo-alerts: $(VENV)/.installed
	$(BIN)/python -m devstack.demo --alerts $(DEMO_ARGS)

# The local stack (moto, SigV4 gateway, the Lambda, a Slack sink) until Ctrl-C.
devstack: $(VENV)/.installed
	$(BIN)/python -m devstack $(DEVSTACK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
