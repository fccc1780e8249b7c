"""Errors that reach a user as one line: what (file or setting) and why.

The CLI maps each class to an exit code (INTERFACE.md): configuration and usage problems exit 2,
data and runtime problems exit 1. Messages never carry patient identifiers.
"""

from __future__ import annotations

from os import PathLike


class MedtlError(Exception):
    """Base class: ``str(err)`` is the one line the CLI prints."""

    exit_code = 1

    def __init__(self, subject: str | PathLike | None, problem: str) -> None:
        self.subject = None if subject is None else str(subject)
        self.problem = " ".join(str(problem).split())  # one line, always
        super().__init__(f"{self.subject}: {self.problem}" if self.subject else self.problem)


class ConfigError(MedtlError):
    """A bad config file, setting or command-line value."""

    exit_code = 2


class ScanError(MedtlError):
    """A scan that cannot be read or turned into a backbone input."""


class DataError(MedtlError):
    """A manifest or dataset problem (missing columns, empty splits, unknown labels)."""


class WeightsError(MedtlError):
    """Pretrained weights that cannot be found offline; never replaced by random ones silently."""


class TrackingError(MedtlError):
    """The MLflow store or server is unreachable or refused a write."""


class MedtlWarning(UserWarning):
    """Something that runs but probably not as meant (an override no arm uses, a label typo, training
    rows scored as test); the CLI prints each as one ``medtl: warning: ...`` line on stderr."""


class ModelIntegrityError(MedtlError):
    """A logged model whose files differ from the checksums recorded when it was logged."""
