"""``medtl`` command line (INTERFACE.md): the parser and entry point (``main.py``), one function per
command (``commands.py``), what they print (``output.py``)."""

from medtl.cli.main import build_parser, main
from medtl.cli.output import print_comparison, print_table

__all__ = ["build_parser", "main", "print_comparison", "print_table"]
