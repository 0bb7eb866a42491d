"""Errors that mean "the user asked for something we cannot do", shown as one line by the CLI."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, option, library). The CLI prints it as one line and exits 2."""


class LibraryError(UserError):
    """An adapter library that cannot be opened or written as asked (wrong backbone, corrupted, locked)."""


class SourceError(UserError):
    """A packaged model or dataset that cannot be fetched or read (offline with no cache, bad checksum)."""
