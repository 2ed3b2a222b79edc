"""Exit codes shared by every program of the package (djb conventions)."""

PERMANENT = 100  # usage errors, parse errors, denied connections
TEMPORARY = 111  # I/O errors, resources, anything worth retrying
BUG = 101        # an internal error that should never happen
