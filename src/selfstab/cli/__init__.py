"""Stage 6 — the command line (``selfstab …``)."""
