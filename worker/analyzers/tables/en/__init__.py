"""English knowledge tables."""
