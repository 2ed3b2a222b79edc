"""Who may send to whom: badmailfrom, rcpthosts/morercpthosts, RELAYCLIENT.

qmail semantics, with the safe-by-default refusals of this implementation
(all lifted when RELAYCLIENT is set, as for a trusted client):
  * rcpthosts missing refuses every domain (qmail would relay for anyone);
  * a local part holding `@`, `%` or `!` is refused (nmap's relay probes);
  * a recipient without a domain is refused unless it is `postmaster`.
"""

from smtpd_child.smtp import replies


class ControlReadError(Exception):
    """morercpthosts.cdb could not be read: the caller answers 421."""


def domain_candidates(domain: bytes):
    """The host, then every suffix starting at a `.`, lower-cased (qmail order)."""
    host = domain.lower()
    yield host
    pos = host.find(b".", 1)
    while pos >= 0:
        yield host[pos:]
        pos = host.find(b".", pos + 1)


class Policy:
    """The relay decisions for one session.

    rcpthosts: iterable of entries, or None when control/rcpthosts is missing.
    more_rcpthosts: callable(key) -> bool for morercpthosts.cdb (may raise
    ControlReadError), or None.  relayclient: the RELAYCLIENT value, None if unset.
    badmailfrom: iterable of entries (exact addresses or `@domain`).
    """

    __slots__ = ("rcpthosts", "more_rcpthosts", "relayclient", "badmailfrom")

    def __init__(self, rcpthosts=None, more_rcpthosts=None, relayclient=None,
                 badmailfrom=()):
        self.rcpthosts = (None if rcpthosts is None
                          else frozenset(entry.lower() for entry in rcpthosts))
        self.more_rcpthosts = more_rcpthosts
        self.relayclient = relayclient
        self.badmailfrom = frozenset(entry.lower() for entry in badmailfrom)

    @classmethod
    def from_sets(cls, rcpthosts, more_rcpthosts, relayclient, badmailfrom):
        """A Policy from sets already lower-cased (controls.lookup_set: shared,
        immutable frozensets, or None for a missing rcpthosts)."""
        policy = cls.__new__(cls)
        policy.rcpthosts = rcpthosts
        policy.more_rcpthosts = more_rcpthosts
        policy.relayclient = relayclient
        policy.badmailfrom = badmailfrom
        return policy

    def sender_is_bad(self, sender: bytes) -> bool:
        if not self.badmailfrom:
            return False
        lowered = sender.lower()
        if lowered in self.badmailfrom:
            return True
        at = lowered.rfind(b"@")
        return at >= 0 and lowered[at:] in self.badmailfrom

    def domain_allowed(self, domain: bytes) -> bool:
        """qmail's rcpthosts(): exact host or a `.suffix` entry, then the cdb."""
        if self.rcpthosts is None or not domain:
            return False
        candidates = list(domain_candidates(domain))
        if any(c in self.rcpthosts for c in candidates):
            return True
        if self.more_rcpthosts is not None:
            return any(self.more_rcpthosts(c) for c in candidates)
        return False

    def check_recipient(self, address: bytes, sender_is_bad: bool):
        """(reply, None) to refuse, or (None, recipient to store) to accept.

        May raise ControlReadError when morercpthosts.cdb cannot be read.
        """
        if sender_is_bad:
            return replies.BADMAILFROM, None
        if self.relayclient is not None:
            return None, address + self.relayclient
        at = address.rfind(b"@")
        if at < 0:
            if address.lower() == b"postmaster":
                return None, address
            return replies.NEEDS_DOMAIN, None
        local, domain = address[:at], address[at + 1:]
        if looks_like_relay(local) or b"%" in domain or b"!" in domain:
            return replies.NO_RELAY, None
        if not self.domain_allowed(domain):
            return replies.NOGATEWAY, None
        return None, address


def looks_like_relay(local_part: bytes) -> bool:
    return b"@" in local_part or b"%" in local_part or b"!" in local_part
