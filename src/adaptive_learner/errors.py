"""Errors that mean "the user asked for something we cannot do", or that a run was lost outside the
program, shown as one line by the CLI."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, option, library). The CLI prints it as one line and exits 2."""


class LibraryError(UserError):
    """An adapter library that cannot be opened or written as asked (wrong backbone, corrupted, locked)."""


class SourceError(UserError):
    """A packaged model or dataset that cannot be fetched or read (offline with no cache, bad checksum)."""


class RunLost(Exception):
    """A run that ended without a result for a reason outside the program (its worker killed or gone);
    what finished is kept. The CLI prints it as one line and exits 1."""
