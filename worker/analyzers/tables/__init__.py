"""Knowledge tables of the talent-mapping analyzer, shipped as JSON package data: one
subpackage per locale (``id``, ``en``), each with the same files and keys."""
