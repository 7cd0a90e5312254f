"""Indonesian (Bahasa Indonesia) knowledge tables."""
