"""rcpthosts, morercpthosts, RELAYCLIENT, badmailfrom and the safe refusals."""

import pytest

from smtpd_child.smtp import replies
from smtpd_child.smtp.policy import ControlReadError, Policy, domain_candidates

RCPTHOSTS = [b"example.com", b"Mail.Example.com", b".example.net"]


def more(keys):
    lowered = {k.lower() for k in keys}
    return lambda key: key in lowered


def verdict(policy, address, bad=False):
    refusal, stored = policy.check_recipient(address, bad)
    return refusal if refusal is not None else stored


def test_candidates_in_qmail_order():
    assert list(domain_candidates(b"A.b.Example.COM")) == [
        b"a.b.example.com", b".b.example.com", b".example.com", b".com"]


@pytest.mark.parametrize("address,allowed", [
    (b"u@example.com", True),
    (b"u@EXAMPLE.COM", True),
    (b"u@mail.example.com", True),
    (b"u@sub.example.com", False),       # exact entry does not cover subdomains
    (b"u@a.example.net", True),          # .domain covers subdomains
    (b"u@a.b.example.net", True),
    (b"u@example.net", False),           # ...but not the domain itself
    (b"u@evilexample.com", False),       # label boundaries only
    (b"u@example.com.other.test", False),
    (b"u@example.com.", False),          # trailing dot not stripped
    (b"u@example.com ", False),
    (b"u@", False),
    (b"u@127.0.0.1", False),
    (b"u@other.test", False),
])
def test_rcpthosts(address, allowed):
    policy = Policy(rcpthosts=RCPTHOSTS)
    assert verdict(policy, address) == (address if allowed else replies.NOGATEWAY)


def test_morercpthosts_after_rcpthosts():
    policy = Policy(rcpthosts=[b"example.com"], more_rcpthosts=more([b"other.test", b".sub.test"]))
    assert verdict(policy, b"u@OTHER.TEST") == b"u@OTHER.TEST"
    assert verdict(policy, b"u@x.sub.test") == b"u@x.sub.test"
    assert verdict(policy, b"u@sub.test") == replies.NOGATEWAY


def test_morercpthosts_read_error_propagates():
    def broken(key):
        raise ControlReadError("boom")
    policy = Policy(rcpthosts=[b"example.com"], more_rcpthosts=broken)
    assert verdict(policy, b"u@example.com") == b"u@example.com"   # found before the cdb
    with pytest.raises(ControlReadError):
        verdict(policy, b"u@other.test")


def test_missing_rcpthosts_refuses_every_domain():
    policy = Policy(rcpthosts=None)
    assert verdict(policy, b"u@example.com") == replies.NOGATEWAY
    assert verdict(policy, b"postmaster") == b"postmaster"


def test_empty_rcpthosts_refuses_domains():
    assert verdict(Policy(rcpthosts=[]), b"u@example.com") == replies.NOGATEWAY


@pytest.mark.parametrize("address,refusal", [
    (b"relaytest%other.test@example.com", replies.NO_RELAY),
    (b"other.test!relaytest@example.com", replies.NO_RELAY),
    (b"relaytest@other.test@example.com", replies.NO_RELAY),
    (b"user@other.test%example.com", replies.NO_RELAY),
    (b"relaytest%other.test", replies.NEEDS_DOMAIN),
    (b"other.test!relaytest", replies.NEEDS_DOMAIN),
    (b"someone", replies.NEEDS_DOMAIN),
    (b"", replies.NEEDS_DOMAIN),
])
def test_safe_refusals_unless_relayclient(address, refusal):
    assert verdict(Policy(rcpthosts=RCPTHOSTS), address) == refusal
    assert verdict(Policy(rcpthosts=RCPTHOSTS, relayclient=b""), address) == address


@pytest.mark.parametrize("name", [b"postmaster", b"Postmaster", b"POSTMASTER"])
def test_postmaster_without_domain_accepted(name):
    assert verdict(Policy(rcpthosts=RCPTHOSTS), name) == name


def test_relayclient_value_is_appended():
    policy = Policy(rcpthosts=RCPTHOSTS, relayclient=b"@fixup.test")
    assert verdict(policy, b"user@other.test") == b"user@other.test@fixup.test"
    assert verdict(policy, b"") == b"@fixup.test"


def test_badmailfrom():
    policy = Policy(rcpthosts=RCPTHOSTS, relayclient=b"",
                    badmailfrom=[b"Spammer@bad.test", b"@evil.test"])
    assert policy.sender_is_bad(b"spammer@BAD.test")
    assert policy.sender_is_bad(b"x@EVIL.test")
    assert not policy.sender_is_bad(b"x@sub.evil.test")
    assert not policy.sender_is_bad(b"")
    assert not policy.sender_is_bad(b"other@bad.test")
    # checked before RELAYCLIENT, as in qmail
    assert verdict(policy, b"u@example.com", bad=True) == replies.BADMAILFROM
