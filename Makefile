PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test typecheck unit bench clean install-service

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/syncd run

typecheck: install
	$(BIN)/mypy

# mypy and the whole suite; pytest runs (and prints its summary) even when mypy fails,
# and the status is a failure if either failed.
test: install
	@status=0; \
	$(BIN)/mypy || status=$$?; \
	$(BIN)/pytest -q -p no:cacheprovider || status=$$?; \
	exit $$status

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .syncd .mypy_cache .pytest_cache

# As root: a venv in /opt/syncd, the config in /etc/syncd/syncd.toml (kept if present;
# the example with its paths pointed at the unit's directories) and the systemd unit.
# Then: systemctl enable --now syncd
OPT := /opt/syncd
install-service:
	@test "$$(id -u)" = 0 || { echo "install-service: run as root" >&2; exit 1; }
	install -d -m 0755 $(OPT)
	$(PYTHON) -m venv $(OPT)/.venv
	$(OPT)/.venv/bin/pip install --quiet --upgrade pip
	$(OPT)/.venv/bin/pip install --quiet .
	install -m 0644 README.md config.example.toml $(OPT)/
	install -D -m 0644 systemd/syncd.sysusers.conf /usr/lib/sysusers.d/syncd.conf
	install -D -m 0644 systemd/syncd.tmpfiles.conf /usr/lib/tmpfiles.d/syncd.conf
	systemd-sysusers syncd.conf
	systemd-tmpfiles --create syncd.conf
	test -e /etc/syncd/syncd.toml || { \
	  sed -e 's|^state_dir = .*|state_dir = "/var/lib/syncd"|' \
	      -e 's|^socket = .*|socket = "/run/syncd/api.sock"|' config.example.toml \
	    > /etc/syncd/syncd.toml.new && \
	  chown root:syncd /etc/syncd/syncd.toml.new && chmod 0640 /etc/syncd/syncd.toml.new && \
	  mv /etc/syncd/syncd.toml.new /etc/syncd/syncd.toml; }
	$(OPT)/.venv/bin/python -c 'import syncd.config as c; c.load("/etc/syncd/syncd.toml", {})'
	install -D -m 0644 systemd/syncd.service /etc/systemd/system/syncd.service
	systemctl daemon-reload
	@echo "installed; start with: systemctl enable --now syncd"
