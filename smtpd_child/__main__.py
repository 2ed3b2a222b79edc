"""`python -m smtpd_child`: the same as the smtpd-child program."""

from smtpd_child.main import main

main()
