"""SMTP AUTH: SASL decoding and options (pure), the checkpassword client (I/O)."""
