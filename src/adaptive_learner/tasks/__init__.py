"""Tasks: specs, the built-in catalog, user files and sequences."""

from .catalog import CATALOG, catalog_names, load_catalog_task
from .files import load_file_task, load_hf_task, read_table
from .sequences import Sequence, builtin_sequences, load_sequence
from .spec import Example, TaskData, TaskSpec, check_name

__all__ = ["CATALOG", "Example", "Sequence", "TaskData", "TaskSpec", "builtin_sequences", "catalog_names",
           "check_name", "load_catalog_task", "load_file_task", "load_hf_task", "load_sequence", "read_table"]
