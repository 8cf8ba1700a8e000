"""Remote commands pampa builds on its own behalf, as pure builders tested with exact strings."""
