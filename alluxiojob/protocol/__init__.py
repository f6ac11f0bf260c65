"""The coordinator ⇄ worker protocol (pure codec, no I/O)."""
