"""The images tier: the runner and operator images built offline (support/image_build) and run
in Docker; the pinned locks they are built from. Tests that need Docker skip with the reason
when it is missing (CI provisions it)."""
