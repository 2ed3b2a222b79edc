# tcpserver-py: every target builds the virtualenv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 2525
VAR := $(CURDIR)/var

.PHONY: install test run rules bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	@# pip's console-script wrappers import re (about 7 ms) only to tidy
	@# argv[0]: every program gets a plain launcher instead (smtpd-child and
	@# tcp-env start once per connection, tcprules on every rules change).
	@for entry in smtpd-child:smtpd_child.main tcp-env:tcpserver_py.tcpenv \
	        tcprulescheck:tcpserver_py.tcprulescheck \
	        tcpserver:tcpserver_py.tcpserver smtpd-spool:smtpd_child.spoolcli \
	        smtpd-checkpassword:smtpd_child.passwords.program \
	        relay-ctrl-allow:smtpd_child.relayctrl.allow \
	        relay-ctrl-check:smtpd_child.relayctrl.check \
	        relay-ctrl-age:smtpd_child.relayctrl.age; do \
	    printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' \
	        "$(abspath $(BIN))/python" "$${entry#*:}" > $(BIN)/$${entry%%:*}; \
	done
	@# CPython will not even start with a directory as standard input
	@# ("Fatal Python error"): tcprules, which reads it, answers as the C
	@# tcprules does, from a shell launcher (about 1 ms).
	@printf '%s\n' '#!/bin/sh' 'if [ -d /dev/stdin ]; then' \
	    '    echo "tcprules: fatal: unable to read input: is a directory" >&2' \
	    '    exit 111' 'fi' \
	    'exec $(abspath $(BIN))/python -P -c "import sys; from tcpserver_py.tcprules import main; sys.exit(main())" "$$@"' \
	    > $(BIN)/tcprules
	@# Bytecode is written here, once: the programs never need to write it
	@# (PYTHONDONTWRITEBYTECODE may be set, or the checkout read-only).
	$(BIN)/python -m compileall -q tcpserver_py smtpd_child
	touch $@

test: install
	$(BIN)/python -m pytest -q tests

# Compile every rules/*.rules into var/rules/*.cdb.
rules: install
	@mkdir -p $(VAR)/rules
	@for src in rules/*.rules; do \
	    name=$$(basename $$src .rules); \
	    $(BIN)/tcprules $(VAR)/rules/$$name.cdb $(VAR)/rules/$$name.tmp < $$src || exit $$?; \
	    echo "compiled $$src -> var/rules/$$name.cdb"; \
	done

# The main job: tcpserver on 127.0.0.1:$(PORT) running smtpd-child with the
# example rules; control files and the spool live under var/qmail.
# tcpserver -1 prints the port (useful with PORT=0).
run: rules
	@$(BIN)/python -m smtpd_child.setup_local $(VAR)/qmail
	@echo "SMTP on 127.0.0.1, port below; read the spool with: $(BIN)/smtpd-spool $(VAR)/qmail/spool list"
	exec $(BIN)/tcpserver -1 -v -HR -l localhost -x $(VAR)/rules/smtp.cdb 127.0.0.1 $(PORT) \
	    env QMAILHOME=$(VAR)/qmail $(BIN)/smtpd-child

bench: install
	$(BIN)/pip install -q aiosmtpd   # the Python SMTP server compared in bench_smtpd
	@# Byte-compile what changed since install: with PYTHONDONTWRITEBYTECODE
	@# set, every run would otherwise compile the sources again.
	$(BIN)/python -m compileall -q tcpserver_py smtpd_child
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VAR) .pytest_cache
