"""The review queue: flagged patch labels, decided with keys, that become trusted labels."""
