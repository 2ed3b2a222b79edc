"""tcpserver-py: UCSPI connection wrapper compatible with ucspi-tcp 0.88."""
