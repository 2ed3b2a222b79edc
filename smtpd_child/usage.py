"""--help and --version of smtpd-child and smtpd-spool (pure: texts only).

Only `--help` or `--version` as the one and only argument asks for them:
beside other arguments they are not options (smtpd-child's arguments name
programs to run, as in qmail-smtpd's SMTP AUTH convention).
"""

from smtpd_child import VERSION_LINE

INFO_OPTIONS = ("--help", "--version")

SMTPD_CHILD_HELP = """\
usage: smtpd-child [checkprogram subprogram [args...]]
       smtpd-child --help | --version

SMTP in the style of qmail-smtpd on fd 0 (input) and fd 1 (replies), one
process per connection, started by tcpserver, by tcp-env under inetd/xinetd,
or over pipes; exit 0 after QUIT, 1 otherwise.  With a checkpassword command
(checkprogram subprogram [args...], user\\0password\\0stamp\\0 on its fd 3),
AUTH PLAIN and LOGIN are offered, under TLS only unless FORCETLS=0.

Configuration (read once, before the greeting):
  $QMAILHOME/control/   me, smtpgreeting, localiphost, rcpthosts,
                        morercpthosts.cdb, databytes, timeoutsmtpd, badmailfrom,
                        servercert.pem (STARTTLS), tlsciphers, tlsprotocols,
                        tarpitcount, tarpitdelay
  QMAILHOME             the qmail home (default /var/qmail)
  RELAYCLIENT           set: relaying allowed, appended to every recipient
  DATABYTES             overrides control/databytes
  QMAILQUEUE            the queue program (default $QMAILHOME/bin/qmail-queue
                        if it exists, else the built-in spool $QMAILHOME/spool)
  SMTPD_DEADLINE        seconds the whole session may last (default 3600)
  SMTPD_ERROR_LIMIT     error replies before `421 too many errors` (default 20)
  SMTPAUTH              "" PLAIN LOGIN, "+cram" also CRAM-MD5, "cram", "-" off;
                        a leading "!" requires AUTH before MAIL (submission)
  FORCETLS              0: AUTH also offered without TLS
  TARPITCOUNT TARPITDELAY  RCPTs per message before each RCPT reply waits
                        TARPITDELAY seconds
  TCPREMOTEIP TCPREMOTEHOST TCPREMOTEINFO TCPLOCALHOST TCPLOCALIP
                        shown in the Received line
Problems an administrator must fix are written to stderr.
"""

SMTPD_SPOOL_HELP = """\
usage: smtpd-spool SPOOLDIR list          one line per message: ID, size, sender, recipients
       smtpd-spool SPOOLDIR show ID       the envelope, a blank line, then the message
       smtpd-spool SPOOLDIR remove ID     delete one message
       smtpd-spool SPOOLDIR sweep [HOURS] remove tmp/ files of killed sessions,
                                          unchanged for HOURS (36)
       smtpd-spool --help | --version

SPOOLDIR is smtpd-child's built-in spool, $QMAILHOME/spool.
"""


def info(arguments, help_text: str):
    """The text to print for `--help`/`--version` alone, else None."""
    if len(arguments) != 1 or arguments[0] not in INFO_OPTIONS:
        return None
    return help_text if arguments[0] == "--help" else VERSION_LINE
