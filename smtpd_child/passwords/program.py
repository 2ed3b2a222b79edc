"""smtpd-checkpassword: a checkpassword program over a file of scrypt hashes.

    smtpd-checkpassword [-f FILE] program [args...]   check, then run program
    smtpd-checkpassword [-f FILE] add USER            set USER's password
    smtpd-checkpassword [-f FILE] remove USER         delete USER

Checking follows D. J. Bernstein's checkpassword interface, so any caller of
it works (qmail-smtpd's AUTH patches, qmail-popup, smtpd-child): it reads up
to 512 bytes from fd 3, `user\\0password\\0` and whatever follows (a timestamp
or a challenge, ignored); on a match it sets $USER and runs its arguments;
exit 1 on a wrong password or an unknown user, 2 on misuse (no program,
fd 3 not open, input without the NULs), 111 on a temporary failure (the
file missing or unreadable, the user's line malformed), each logged on
stderr with the path and reason.  A password is never logged.

The file is -f FILE, else $SMTPD_PASSWORDS, else
$QMAILHOME/control/smtppasswd ($QMAILHOME defaults to /var/qmail); its
format is in passfile.py and docs/relaying.md.  add reads the password
from standard input (its first line), or asks twice without echo on a
terminal; add and remove exit 0 done, 1 no such user (remove), 100 on a
bad name, password or usage, 111 when the file could not be updated.
"""

import errno
import os
import sys

from smtpd_child.passwords import passfile, store
from smtpd_child.chainexec import answered_info, exec_program, log

NAME = "smtpd-checkpassword"
INPUT_LIMIT = 512               # checkpassword reads at most this from fd 3
EXIT_BAD, EXIT_MISUSE, EXIT_USAGE, EXIT_TEMPORARY = 1, 2, 100, 111
USAGE = ("usage: smtpd-checkpassword [-f file] program [args...]\n"
         "       smtpd-checkpassword [-f file] add USER | remove USER")
HELP = USAGE + """
       smtpd-checkpassword --help | --version

Checks user\\0password\\0 read from fd 3 against the password file (-f file,
else $SMTPD_PASSWORDS, else $QMAILHOME/control/smtppasswd) and runs the
program on a match: exit 1 wrong password, 2 misuse, 111 temporary failure.
add reads the password from stdin (or asks on a terminal); remove deletes.
"""


def default_path(env) -> str:
    if env.get("SMTPD_PASSWORDS"):
        return env["SMTPD_PASSWORDS"]
    return os.path.join(env.get("QMAILHOME") or "/var/qmail", "control", "smtppasswd")


def parse_options(argv):
    """(file path or None, the remaining arguments); None args on misuse."""
    path = None
    while argv and argv[0].startswith("-"):
        option = argv.pop(0)
        if option == "--":
            break
        if option in ("-f", "--file"):
            if not argv:
                return path, None
            path = argv.pop(0)
        elif option.startswith("--file="):
            path = option[len("--file="):]
        elif option.startswith("-f"):
            path = option[2:]
        else:
            return path, None
    return path, argv


def read_fd3():
    """The bytes on fd 3 (at most INPUT_LIMIT + 1), or an exit code."""
    data = b""
    while len(data) <= INPUT_LIMIT:
        try:
            chunk = os.read(3, INPUT_LIMIT + 1 - len(data))
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == errno.EBADF:     # not run by a checkpassword caller
                log(NAME, "fatal: nothing on file descriptor 3 (user\\0password\\0 expected)")
                return EXIT_MISUSE
            log(NAME, f"fatal: unable to read file descriptor 3: {exc.strerror}")
            return EXIT_TEMPORARY
        if not chunk:
            break
        data += chunk
    try:
        os.close(3)
    except OSError:
        pass
    return data


def check(path: str, program: list) -> int:
    data = read_fd3()
    if isinstance(data, int):
        return data
    if len(data) > INPUT_LIMIT:
        return EXIT_BAD             # as checkpassword: too long to be a login
    user, nul, rest = data.partition(b"\0")
    password, nul2, _ = rest.partition(b"\0")
    if not nul or not nul2:
        log(NAME, "fatal: input on file descriptor 3 is not user\\0password\\0")
        return EXIT_MISUSE
    try:
        contents = store.read(path)
    except store.StoreError as exc:
        log(NAME, f"temporary failure: {exc}")
        return EXIT_TEMPORARY
    status, encoded, problems = passfile.lookup(contents, user)
    for number, reason in problems:
        log(NAME, f"{path}:{number}: malformed line ignored: {reason}")
    if status == passfile.UNUSABLE:
        log(NAME, f"temporary failure: the line for the user logging in is unusable in {path}")
        return EXIT_TEMPORARY
    if status == passfile.ABSENT:
        passfile.waste_time(password)
        return EXIT_BAD
    if not passfile.verify(password, encoded):
        return EXIT_BAD
    exec_program(NAME, program, {"USER": os.fsdecode(user)})
    return EXIT_TEMPORARY           # not reached


def read_new_password():
    """The password for add, as bytes; a str is an error message."""
    if sys.stdin.isatty():
        import getpass
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            return "the two passwords differ"
        return first.encode("utf-8", "surrogateescape")
    data = sys.stdin.buffer.read(passfile.MAX_PASSWORD + 3)
    line = data.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


def add(path: str, user: bytes) -> int:
    problem = passfile.name_problem(user)
    if problem is None:
        password = read_new_password()
        problem = password if isinstance(password, str) else passfile.password_problem(password)
    if problem is not None:
        log(NAME, f"fatal: {problem}")
        return EXIT_USAGE
    encoded = passfile.encode(password, os.urandom(passfile.SALT_BYTES))   # slow: outside the lock
    try:
        store.update(path, lambda old: (passfile.with_entry(old, user, encoded), None))
    except store.StoreError as exc:
        log(NAME, f"fatal: {exc}")
        return EXIT_TEMPORARY
    return 0


def remove(path: str, user: bytes) -> int:
    def change(old):
        new, found = passfile.without_entry(old, user)
        return (new if found else None), found
    try:
        found = store.update(path, change)
    except store.StoreError as exc:
        log(NAME, f"fatal: {exc}")
        return EXIT_TEMPORARY
    if not found:
        log(NAME, f"no user {os.fsdecode(user)!r} in {path}")
        return EXIT_BAD
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if answered_info(argv, HELP):
        return 0
    path, args = parse_options(argv)
    if not args:
        log(NAME, USAGE)
        return EXIT_MISUSE
    path = path or default_path(os.environ)
    if args[0] in ("add", "remove"):
        if len(args) != 2:
            log(NAME, USAGE)
            return EXIT_USAGE
        user = os.fsencode(args[1])
        return add(path, user) if args[0] == "add" else remove(path, user)
    return check(path, args)
