"""Text leaving the machine for MLflow carries no file path: file names often name patients.

Used on reports written for local eyes (the curation report lists quarantined files by name)
before they are logged; each known path, any trailing part of it and its bare name are replaced by
a stable token (``file-<8 hex>``), so a reader can still match lines without learning the name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import PurePath


def _token(path: str) -> str:
    return "file-" + hashlib.sha256(path.encode()).hexdigest()[:8]


def redact_paths(text: str, paths: Iterable[str]) -> str:
    """``text`` with every path in ``paths`` (whole, any trailing part of it, its name, its stem) replaced."""
    replacements: dict[str, str] = {}
    for p in paths:
        p = str(p)
        if not p:
            continue
        token = _token(p)
        parts = PurePath(p).parts
        for i in range(len(parts)):
            tail = str(PurePath(*parts[i:]))
            replacements.setdefault(tail, token)
        name = PurePath(p).name
        for stem in (name.split(".")[0], PurePath(p).stem):
            if len(stem) >= 4:  # a very short stem ("1") would shred ordinary text
                replacements.setdefault(stem, token)
    if not replacements:
        return text
    # longest first, so a whole path wins over its name; never inside a longer word ("scan" in "scans")
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(k) for k in sorted(replacements, key=len, reverse=True)) + r")(?!\w)")
    return pattern.sub(lambda m: replacements[m.group(0)], text)
