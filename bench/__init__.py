"""Benchmarks run side by side with the C peers (`make bench`)."""
