"""--help texts for tcpserver and tcp-env (pure).

The original programs have no --help; ours print these on stdout and exit 0.
Every option is listed, ours marked as extensions, so the text doubles as a
reminder of where we differ.
"""

from __future__ import annotations

TCPSERVER_HELP = """\
usage: tcpserver [ options ] host port program [ arg ... ]

Accept TCP connections on host:port and run program for each, with the
connection on fd 0 and 1 and the UCSPI variables (PROTO, TCPLOCAL*,
TCPREMOTE*) in its environment.  Options as in ucspi-tcp 0.88:

  -c n       at most n children at once (default 40)
  -b n       listen backlog (default 20)
  -x cdb     apply the rules in cdb (compiled by tcprules) to each client
  -X         with -x: a missing cdb allows the connection
  -B text    write text to the client first
  -g gid     switch to numeric group gid after binding
  -u uid     switch to numeric user uid after binding (drops the
             supplementary groups; add -g, or the group stays 0)
  -U         take uid and gid from $UID and $GID (envuidgid USER tcpserver -U)
  -1         print the local port on stdout after binding
  -h / -H    look up the client's name (default) / don't
  -p / -P    paranoid: keep the name only if it resolves back / don't (default)
  -l name    use name as TCPLOCALHOST instead of looking it up (-l 0)
  -r / -R    ask the client's identd for TCPREMOTEINFO (default) / don't
  -t n       ident deadline in seconds (default 26)
  -O / -o    kill IPv4 options (default) / keep them
  -d / -D    leave Nagle on (default) / set TCP_NODELAY
  -q / -Q / -v   no messages / errors only (default) / also log connections

Extensions (not in ucspi-tcp 0.88):

  -4, --ipv4               IPv4 only (host 0 is IPv4 only anyway)
  -6, --ipv6               IPv6 only: host 0 or :: binds :: with IPV6_V6ONLY
  -C n, --per-ip-limit n   at most n connections per client address
                           (a rule's MAXCONIP=n overrides it; 0: no limit)
  -M text, --per-ip-message text
                           sent to a client refused by the per-IP limit
  --preload                when the program is smtpd-child, import it once and
                           run it in each forked child without exec (any
                           other program is exec'd as usual)
  --help, --version        this text / the version, on stdout (exit 0)

Deployment (docs/deploy/):

  --proxy-from cidr[,cidr...]
                           connections from these addresses (load balancers)
                           begin with a PROXY v1/v2 header naming the client
  --proxy-timeout n        seconds to wait for that header (default 10)
  --reuseport              SO_REUSEPORT: several tcpservers on one address
  --fdname name            with host and port "- -": the systemd socket of
                           that FileDescriptorName
  --daemon                 detach (python-daemon) once bound
  --pidfile file           write and lock a pidfile, removed at exit
  --log file|syslog[:facility]
                           with --daemon: where stderr goes
  --stop-timeout n         SIGQUIT (graceful stop) waits at most n seconds
                           for the children (default 30)

Hosts: 0 means every IPv4 address (0.0.0.0), as in ucspi-tcp 0.88; ::
means IPv4 and IPv6 (one dual-stack socket); a literal address or a name
binds that address.  Host and port both "-": serve the listening socket
handed over by systemd (LISTEN_FDS) or on fd 0.

Signals: SIGTERM exits at once (children keep running); SIGQUIT stops
accepting, waits for the children, exits 0.

Start it with a clean environment (env -i PATH=... tcpserver ...): every
variable tcpserver is given reaches every program it runs; an inherited
RELAYCLIENT opens the relay to all clients (a warning says so).

Exit status: 100 bad usage, 111 cannot bind or run.  More: docs/tcpserver.md.
"""

TCPENV_HELP = """\
usage: tcp-env [ options ] program [ arg ... ]

For programs started by inetd/xinetd: the connection is on fd 0; set the
variables tcpserver sets (PROTO, TCPLOCAL*, TCPREMOTE*) and run program.
As qmail's tcp-env:

  -r / -R    ask the client's identd for TCPREMOTEINFO (default) / don't
  -t n       ident deadline in seconds (default 30)

Extensions (other options are ignored, as qmail's tcp-env ignores them):

  -x cdb     apply tcpserver's rules in cdb (a deny rule exits 100); name
             rules (=host, =.domain) only ever see a name that resolves
             back to the client
  -X         with -x: a missing cdb allows the connection
  -h / -H    look up the client's name (default) / don't
  -p / -P    paranoid: set TCPREMOTEHOST only if the name resolves back to
             the client / set the name the PTR record gives (default)
  -l name    use name as TCPLOCALHOST instead of looking it up
  --proxy-from cidr[,cidr...]
             connections from these addresses (load balancers) begin with
             a PROXY v1/v2 header naming the client
  --proxy-timeout n   seconds to wait for that header (default 10)
  --help, --version   this text / the version, on stdout (exit 0)

Exit status: 100 denied by a rule, 111 any failure.  More: docs/tcpserver.md.
"""
