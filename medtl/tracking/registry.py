"""Registry promotion by aliases: ``champion`` moves only to a model that beats it on the same data.

The current champion is re-scored on the new comparison's validation set unless its recorded
score was measured on exactly that set (same fingerprint). The decision, both scores and the
reason are written onto the new model version as tags *before* any alias moves, so an interrupted
registration resumes to the same decision instead of comparing the model with itself.

A model is only loaded if its files are the ones it was logged with: an edited weights file or a
swapped class map would otherwise be used without a word (``verify_checksums``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medtl.errors import ModelIntegrityError

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
COMPARISON_TAG = "medtl.comparison_run"


@dataclass
class Decision:
    name: str
    version: str
    alias: str
    val_auc: float
    champion_val_auc: float | None
    previous_champion: str | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def tags(self, val_fingerprint: str) -> dict[str, str]:
        return {"medtl.val_auc": f"{self.val_auc:.6f}", "medtl.val_fingerprint": val_fingerprint,
                "medtl.decision": self.alias, "medtl.decision_reason": self.reason,
                "medtl.champion_val_auc": "" if self.champion_val_auc is None else f"{self.champion_val_auc:.6f}",
                "medtl.previous_champion": self.previous_champion or ""}

    @classmethod
    def from_version(cls, mv: ModelVersion) -> Decision | None:
        t = mv.tags
        if "medtl.decision" not in t:
            return None
        return cls(mv.name, str(mv.version), t["medtl.decision"], float(t["medtl.val_auc"]),
                   float(t["medtl.champion_val_auc"]) if t.get("medtl.champion_val_auc") else None,
                   t.get("medtl.previous_champion") or None, t.get("medtl.decision_reason", ""))


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    return _alias_version(client, name, CHAMPION)


def registered_for(client: MlflowClient, name: str, comparison_run: str) -> ModelVersion | None:
    """The version a comparison already registered (an interrupted run being resumed), if any."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    mine = [v for v in versions if v.tags.get(COMPARISON_TAG) == comparison_run]
    return max(mine, key=lambda v: int(v.version)) if mine else None


def decide(client: MlflowClient, name: str, version: str, val_auc: float, val_fingerprint: str,
           score_champion: Callable[[str], float]) -> Decision:
    """Champion if ``version`` beats the current champion on this validation set, else challenger."""
    champ = current_champion(client, name)
    if champ is None or str(champ.version) == str(version):
        return Decision(name, str(version), CHAMPION, val_auc, None, None, "no champion yet")
    if champ.tags.get("medtl.val_fingerprint") == val_fingerprint and "medtl.val_auc" in champ.tags:
        champ_auc, how = float(champ.tags["medtl.val_auc"]), "its recorded score"
    else:
        champ_auc, how = float(score_champion(f"models:/{name}/{champ.version}")), "re-scored"
    beats = val_auc > champ_auc
    reason = (f"val AUC {val_auc:.4f} {'beats' if beats else 'does not beat'} champion v{champ.version} "
              f"({champ_auc:.4f}, {how}) on the same validation data")
    return Decision(name, str(version), CHAMPION if beats else CHALLENGER, val_auc, champ_auc, str(champ.version), reason)


def apply(client: MlflowClient, decision: Decision, val_fingerprint: str) -> None:
    """Record the decision on the version, then move its alias (unless a newer version holds it already)."""
    for key, value in decision.tags(val_fingerprint).items():
        client.set_model_version_tag(decision.name, decision.version, key, value)
    holder = _alias_version(client, decision.name, decision.alias)
    if holder is None or int(holder.version) <= int(decision.version):
        client.set_registered_model_alias(decision.name, decision.alias, decision.version)


def promote(client: MlflowClient, name: str, version: str, val_auc: float, val_fingerprint: str,
            score_champion: Callable[[str], float]) -> Decision:
    """Decide and apply; a version that already carries a decision keeps it (resumed registration)."""
    decision = Decision.from_version(client.get_model_version(name, version))
    if decision is None:
        decision = decide(client, name, version, val_auc, val_fingerprint, score_champion)
    apply(client, decision, val_fingerprint)
    return decision


_WHAT = {"weights": "the weights", "meta": "the class map and preprocessing"}


def verify_checksums(files: Mapping[str, str], recorded: Mapping[str, str] | None) -> None:
    """Each recorded file's sha256 as logged, or a ``ModelIntegrityError`` naming the file (never its path)."""
    if not recorded:
        log.warning("medtl: this model records no checksums of its files (logged by an older medtl); loaded unverified")
        return
    for name, digest in recorded.items():
        path = files.get(name)
        if path is None or not Path(path).is_file():
            raise ModelIntegrityError(name, f"the model's file for {_WHAT.get(name, name)} is missing; refusing to load it")
        with open(path, "rb") as f:  # read now, not a cached digest: the file may have changed in place
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        if actual != digest:
            raise ModelIntegrityError(Path(path).name, f"{_WHAT.get(name, name)} differ from what was logged at training "
                                                       "(sha256 mismatch: the file was edited or replaced); refusing to load the model")
