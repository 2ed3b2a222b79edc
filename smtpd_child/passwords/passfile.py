"""The password file of smtpd-checkpassword, pure: format, hashing, checking.

One line per user:

    NAME:$scrypt$ln=15,r=8,p=1$SALT$HASH

NAME is 1 to 255 bytes, none of them a colon, a space or a control
character (an e-mail address is a fine name); names are compared byte for
byte.  The rest is the PHC string format for scrypt (as passlib writes it,
with the standard base64 alphabet, no padding): N = 2**ln, r and p are
scrypt's parameters, SALT and HASH are base64.  Empty lines and lines
starting with `#` are skipped and kept by `add`/`remove`.

Parameters in the file are bounded (N at most 2**20, at most 1 GiB of
memory), so a corrupt or hostile line cannot make a check run for minutes.
"""

import binascii
import hashlib
import hmac

DEFAULT_LN = 15                 # N = 32768: about 0.1 s and 32 MiB per check
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_LN = 20
MAX_R = 32
MAX_P = 16
MAX_MEMORY = 2 ** 30
MAX_NAME = 255
MAX_PASSWORD = 510              # what fits in the 512 bytes read from fd 3
SCHEME = "$scrypt$"

# A fixed salt for the check run when the name is unknown: the answer then
# takes as long as for a known name, so timing does not tell which exist.
_DUMMY_SALT = b"smtpd-checkpassword-no-such-user"


class BadLine(ValueError):
    pass


def name_problem(name: bytes):
    """Why `name` cannot be a user name, or None when it can."""
    if not name:
        return "empty name"
    if len(name) > MAX_NAME:
        return f"name longer than {MAX_NAME} bytes"
    if any(b <= 0x20 or b == 0x7F or b == 0x3A for b in name):
        return "name holds a colon, a space or a control character"
    return None


def password_problem(password: bytes):
    if not password:
        return "empty password"
    if len(password) > MAX_PASSWORD:
        return f"password longer than {MAX_PASSWORD} bytes"
    if b"\0" in password:
        return "password holds a NUL byte"
    return None


def _b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadLine("bad base64") from None


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
    memory = 128 * r * (2 ** ln) + 128 * r * p
    return hashlib.scrypt(password, salt=salt, n=2 ** ln, r=r, p=p,
                          maxmem=memory + 2 ** 20, dklen=length)


def encode(password: bytes, salt: bytes, ln=DEFAULT_LN, r=DEFAULT_R, p=DEFAULT_P) -> str:
    """The stored form of `password` with this salt and these parameters."""
    digest = _scrypt(password, salt, ln, r, p, HASH_BYTES)
    return f"{SCHEME}ln={ln},r={r},p={p}${_b64encode(salt)}${_b64encode(digest)}"


def decode(encoded: str):
    """(ln, r, p, salt, digest) from a stored form; BadLine says what is wrong."""
    if not encoded.startswith(SCHEME):
        raise BadLine("not a $scrypt$ hash")
    fields = encoded[len(SCHEME):].split("$")
    if len(fields) != 3:
        raise BadLine("expected $scrypt$PARAMS$SALT$HASH")
    params = {}
    for item in fields[0].split(","):
        key, _, value = item.partition("=")
        if key not in ("ln", "r", "p") or key in params:
            raise BadLine(f"unknown or repeated parameter {key!r}")
        if not value.isascii() or not value.isdigit() or len(value) > 4:
            raise BadLine(f"parameter {key} is not a small number")
        params[key] = int(value)
    if set(params) != {"ln", "r", "p"}:
        raise BadLine("parameters ln, r and p are all needed")
    ln, r, p = params["ln"], params["r"], params["p"]
    if not (1 <= ln <= MAX_LN and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise BadLine("scrypt parameters out of bounds")
    if 128 * r * (2 ** ln) > MAX_MEMORY:
        raise BadLine("scrypt parameters need too much memory")
    salt, digest = _b64decode(fields[1]), _b64decode(fields[2])
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        raise BadLine("salt or hash of an unusual length")
    return ln, r, p, salt, digest


def verify(password: bytes, encoded: str) -> bool:
    """Whether `password` matches; the comparison takes constant time."""
    ln, r, p, salt, digest = decode(encoded)
    return hmac.compare_digest(_scrypt(password, salt, ln, r, p, len(digest)), digest)


def waste_time(password: bytes) -> None:
    """The work of one check at the default cost, for an unknown name."""
    _scrypt(password, _DUMMY_SALT, DEFAULT_LN, DEFAULT_R, DEFAULT_P, HASH_BYTES)


def _entries(data: bytes):
    """(line number, name or None, rest of the line) for each non-comment line."""
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line or line.startswith(b"#"):
            continue
        name, colon, rest = line.partition(b":")
        yield number, (name if colon else None), rest


FOUND, ABSENT, UNUSABLE = "found", "absent", "unusable"


def lookup(data: bytes, name: bytes):
    """Find `name`: (FOUND/ABSENT/UNUSABLE, encoded hash or None, problems).

    problems are (line number, reason) for every malformed line, so the
    administrator hears of them whoever logs in.  A name on a malformed line,
    or on two lines, is UNUSABLE: the caller answers "temporary failure",
    never guesses which line was meant.
    """
    found, problems, unusable, seen = None, [], False, set()
    for number, entry, rest in _entries(data):
        reason = "no colon after the name" if entry is None else name_problem(entry)
        encoded = None
        if reason is None:
            try:
                encoded = rest.decode("ascii")
                decode(encoded)
            except UnicodeDecodeError:
                reason = "hash is not ASCII"
            except BadLine as exc:
                reason = str(exc)
        if reason is not None:
            problems.append((number, reason))
            unusable = unusable or entry == name
            continue
        if entry in seen:
            problems.append((number, "the name is also on an earlier line"))
            unusable = unusable or entry == name
        seen.add(entry)
        if entry == name and found is None:
            found = encoded
    if unusable:
        return UNUSABLE, None, problems
    return (ABSENT if found is None else FOUND), found, problems


def with_entry(data: bytes, name: bytes, encoded: str) -> bytes:
    """The file with `name` set to `encoded`: its first line replaced (any
    later line of that name dropped), or a line appended."""
    new_line = name + b":" + encoded.encode("ascii")
    out, done = [], False
    for line in _lines(data):
        if line.partition(b":")[0] == name and not line.startswith(b"#"):
            if not done:
                out.append(new_line)
                done = True
            continue
        out.append(line)
    if not done:
        out.append(new_line)
    return b"".join(line + b"\n" for line in out)


def without_entry(data: bytes, name: bytes):
    """(the file without any line of `name`, whether there was one)."""
    out = [line for line in _lines(data)
           if line.startswith(b"#") or line.partition(b":")[0] != name]
    found = len(out) != len(_lines(data))
    return b"".join(line + b"\n" for line in out), found


def _lines(data: bytes):
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines
