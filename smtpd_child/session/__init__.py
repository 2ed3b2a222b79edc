"""smtpd-child after its greeting: the control files parsed (config, with
controls: their values memoised by contents), the extensions (actions: AUTH,
STARTTLS by tls, the tarpit) and the session driven on fd 0/1 (driver)."""
