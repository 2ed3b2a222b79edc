"""smtpd-child: a qmail-smtpd-compatible SMTP responder for UCSPI servers."""
