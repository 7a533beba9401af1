"""Runtime: turning inputs into frames (offline `say` now; the live session and pipeline later)."""
