"""Proof under faults, hostile input and load: `make stress` (see docs/reliability.md)."""
