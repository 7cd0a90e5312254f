"""The upgrade machinery: the last release (CHANGELOG.md) built from git history and run beside
the working tree — compatibility checks and `make test-upgrade`'s rolling update."""
