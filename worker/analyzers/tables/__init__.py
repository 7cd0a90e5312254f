"""Knowledge tables of the talent-mapping analyzer, shipped as JSON package data."""
