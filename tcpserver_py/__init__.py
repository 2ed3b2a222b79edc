"""UCSPI programs: tcpserver, tcprules, tcprulescheck, tcp-env."""

VERSION_LINE = "tcpserver-py 0.1.0\n"
