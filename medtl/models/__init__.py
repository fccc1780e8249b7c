"""Backbones, their layer groups and heads. Importing the package registers the built-in backbones
(``backbones``), so ``medtl.models.registry`` itself stays a leaf."""

from medtl.models import backbones  # noqa: F401  (registers the built-in families)
