"""The adapter library on disk, one package: ``store`` (the library and its transactions' API),
``txn`` (staging, the commit point, recovery, the writer's lock) and ``check`` (manifest structure
and file integrity)."""

from .check import check_file_name, check_manifest
from .store import AdapterLibrary
from .txn import MANIFEST, committed, lock_timeout, recover

__all__ = ["AdapterLibrary", "MANIFEST", "check_file_name", "check_manifest", "committed", "lock_timeout", "recover"]
