"""``medtl`` as torchrun launches it in the tests, with the test-only ``tiny`` backbone registered."""

import sys

import tests.conftest  # noqa: F401  - registers the ``tiny`` backbone
from medtl.cli import main

if __name__ == "__main__":
    sys.exit(main())
