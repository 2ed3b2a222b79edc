# tcpserver-py: every target builds the virtualenv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 2525
SUBMISSION_PORT ?= $(if $(filter 0,$(PORT)),0,2587)
VAR := $(CURDIR)/var

# Every program: name:module (main() is called); tcpserver_py/install/launchers.py writes a
# plain launcher for each into the bin directory.
PROGRAMS := smtpd-child:smtpd_child.main tcp-env:tcpserver_py.tcpenv \
    tcprules:tcpserver_py.tcprules tcprulescheck:tcpserver_py.tcprulescheck \
    tcpserver:tcpserver_py.tcpserver smtpd-spool:smtpd_child.spoolcli \
    smtpd-checkpassword:smtpd_child.passwords.program \
    relay-ctrl-allow:smtpd_child.relayctrl.allow \
    relay-ctrl-check:smtpd_child.relayctrl.check \
    relay-ctrl-age:smtpd_child.relayctrl.age

# make install PREFIX=/opt/tcpserver-py: a production install (docs/install.md)
# instead of the .venv of this checkout.
PREFIX ?=
DEST = $(abspath $(PREFIX))
LIBDIR = $(DEST)/lib/tcpserver-py
MANDIR = $(DEST)/share/man/man1

.PHONY: install install-prefix test run rules bench stress clean

ifeq ($(strip $(PREFIX)),)
install: $(VENV)/.installed
else
install: install-prefix
endif

$(VENV)/.installed: pyproject.toml tcpserver_py/install/launchers.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -m tcpserver_py.install.launchers $(abspath $(BIN)) $(abspath $(BIN))/python $(PROGRAMS)
	@# Bytecode is written here, once: the programs never need to write it
	@# (PYTHONDONTWRITEBYTECODE may be set, or the checkout read-only).
	$(BIN)/python -m compileall -q tcpserver_py smtpd_child
	touch $@

# A virtualenv under $(PREFIX)/lib/tcpserver-py that any user can read (the
# programs run as -u/-g service users), launchers in $(PREFIX)/bin, manual
# pages in $(PREFIX)/share/man/man1.  Refused when the interpreter itself is
# not readable by other users (a pyenv under /root, say): PYTHON=/usr/bin/python3.
install-prefix:
	@test -n "$(strip $(PREFIX))" || { echo "make install-prefix: set PREFIX=/opt/tcpserver-py" >&2; exit 100; }
	$(PYTHON) -m tcpserver_py.install.check interpreter
	umask 022 && $(PYTHON) -m venv $(LIBDIR)
	umask 022 && $(LIBDIR)/bin/pip install -q .
	umask 022 && $(LIBDIR)/bin/python -m compileall -q $(LIBDIR)/lib
	umask 022 && $(LIBDIR)/bin/python -m tcpserver_py.install.launchers $(DEST)/bin $(LIBDIR)/bin/python $(PROGRAMS)
	umask 022 && mkdir -p $(MANDIR) && for page in docs/man/*.1; do \
	    install -m 0644 "$$page" $(MANDIR)/ || exit 1; done
	chmod -R a+rX $(LIBDIR)
	$(LIBDIR)/bin/python -m tcpserver_py.install.check tree $(LIBDIR) $(DEST)/bin $(MANDIR)
	@echo "installed: programs in $(DEST)/bin, manual pages in $(MANDIR)"

test: install
	$(BIN)/python -m pytest -q tests

# Compile every rules/*.rules into var/rules/*.cdb.
rules: install
	@mkdir -p $(VAR)/rules
	@for src in rules/*.rules; do \
	    name=$$(basename $$src .rules); \
	    $(BIN)/tcprules $(VAR)/rules/$$name.cdb $(VAR)/rules/$$name.tmp < $$src || exit $$?; \
	    echo "compiled $$src -> $(VAR)/rules/$$name.cdb"; \
	done

# The main job: tcpserver on 127.0.0.1:$(PORT) running smtpd-child with the
# example rules, and beside it a submission listener on $(SUBMISSION_PORT)
# (AUTH required before MAIL: rules/submission.rules sets SMTPAUTH="!").
# Both offer STARTTLS and AUTH with the test user setup_local prints.
# Control files, the password file and the spool live under var/qmail.
# tcpserver -1 prints the port (useful with PORT=0); the submission port is
# printed after "submission port". Both stop together.  smtpd-child runs
# preloaded (--preload: the fastest mode), so it is named directly and
# QMAILHOME comes from tcpserver's environment.
SMTPD = $(abspath $(BIN))/smtpd-child $(abspath $(BIN))/smtpd-checkpassword /bin/true
run: rules
	@$(BIN)/python -m smtpd_child.setup_local $(VAR)/qmail
	@echo "SMTP on 127.0.0.1, port below; read the spool with: $(BIN)/smtpd-spool $(VAR)/qmail/spool list"
	@trap 'kill 0' EXIT; export QMAILHOME=$(VAR)/qmail; \
	$(BIN)/tcpserver --preload -1 -v -HR -l localhost -x $(VAR)/rules/submission.cdb \
	    127.0.0.1 $(SUBMISSION_PORT) $(SMTPD) | sed -u 's/^/submission port /' & \
	$(BIN)/tcpserver --preload -1 -v -HR -l localhost -x $(VAR)/rules/smtp.cdb 127.0.0.1 \
	    $(PORT) $(SMTPD)

bench: install
	@# The bench extra (pyproject.toml): aiosmtpd, compared in bench_smtpd, and
	@# matplotlib for docs/bench.png; never a dependency of the programs.
	$(BIN)/pip install -q $$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
	@# Byte-compile what changed since install: with PYTHONDONTWRITEBYTECODE
	@# set, every run would otherwise compile the sources again.
	$(BIN)/python -m compileall -q tcpserver_py smtpd_child
	$(BIN)/python -m bench.run_all

# Faults, hostile input and load, a few minutes, loopback only, one summary
# table; exits 1 when an invariant breaks (docs/reliability.md).
# STRESS_ARGS=--quick for the small counts; --mode NAME picks tcpserver's mode.
stress: install
	$(BIN)/python -m compileall -q tcpserver_py smtpd_child
	cd tests && $(abspath $(BIN))/python -m stress.run $(STRESS_ARGS)

clean:
	rm -rf $(VAR) .pytest_cache
