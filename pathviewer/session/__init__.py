"""Qt-free state of a viewer session that several features read and write (see docs/architecture.md)."""
