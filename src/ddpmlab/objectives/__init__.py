"""Training objectives: small callables that return a per-example loss of shape (B,)."""
