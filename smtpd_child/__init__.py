"""smtpd-child: a qmail-smtpd-compatible SMTP responder for UCSPI servers."""

# The package's version, as `--version` prints it (the same release as
# tcpserver_py's VERSION_LINE; the two packages never import each other).
VERSION_LINE = "tcpserver-py 0.1.0\n"
