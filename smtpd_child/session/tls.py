"""STARTTLS on fd 0/1 with the standard library's ssl.

The server context comes from $QMAILHOME/control/servercert.pem (certificate
chain and private key in one PEM file, as qmail's TLS patch names it), TLS 1.2
and newer only, the server's cipher preference; control/tlsciphers and
control/tlsprotocols refine it.  STARTTLS needs fd 0 to be a socket with fd 1
the same socket (tcpserver, tcp-env under inetd); over pipes it is not offered.
Imported only when servercert.pem exists and fd 0 is a socket: `ssl` costs
start-up time (actions.setup decides).
"""

import os
import socket
import ssl

from smtpd_child.auth.options import parse_tlsprotocols

READ_SIZE = 65536
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def server_context(cert_path, ciphers=None, protocols=None):
    """(context, []) or (None, [reasons for the log]); never raises."""
    notes = []
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= (ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
                            | ssl.OP_NO_RENEGOTIATION)
        # An empty password: an encrypted key fails instead of prompting on a tty.
        context.load_cert_chain(cert_path, password=b"")
    except OSError as e:
        return None, [f"STARTTLS not offered: unable to read {cert_path}: "
                      f"{e.strerror or _ssl_reason(e)}"]
    except ValueError as e:
        return None, [f"STARTTLS not offered: unable to use {cert_path}: {e}"]
    if ciphers:
        try:
            context.set_ciphers(ciphers.decode(errors="replace"))
        except ssl.SSLError as e:
            return None, [f"STARTTLS not offered: control/tlsciphers: {_ssl_reason(e)}"]
    if protocols is not None:
        allowed, notes = parse_tlsprotocols(protocols)
        if not allowed:
            return None, notes + ["STARTTLS not offered: control/tlsprotocols allows no version"]
        context.minimum_version = _VERSIONS[allowed[0]]
        context.maximum_version = _VERSIONS[allowed[-1]]
    return context, notes


def _ssl_reason(error) -> str:
    return getattr(error, "reason", None) or str(error)


class Channel:
    """The encrypted connection, once the handshake is done."""

    def __init__(self, sock):
        self.sock = sock

    def recv(self, wait: float):
        """Bytes; b"" at EOF or on an error; None when nothing came in time."""
        try:
            self.sock.settimeout(wait)
            return self.sock.recv(READ_SIZE)
        except TimeoutError:
            return None
        except (ssl.SSLError, OSError):
            return b""

    def send(self, data: bytes, wait: float) -> None:
        """Raises OSError (TimeoutError included) when it cannot finish in time."""
        self.sock.settimeout(wait)
        self.sock.sendall(data)

    def release(self) -> None:
        """Timeouts made the socket non-blocking; give it back blocking, as it
        came (its open file description may be shared, e.g. with inetd)."""
        try:
            self.sock.setblocking(True)
        except OSError:
            pass


def start(context, wait: float):
    """(Channel, None) after a handshake on fd 0, or (None, reason)."""
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError as e:
        return None, f"no socket on fd 0: {e.strerror}"
    try:
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        tls.settimeout(max(wait, 0.001))
        tls.do_handshake()
    except TimeoutError:
        sock.close()
        return None, "timed out"
    except ssl.SSLError as e:
        sock.close()
        return None, _ssl_reason(e)
    except OSError as e:
        sock.close()
        return None, e.strerror or str(e)
    return Channel(tls), None
