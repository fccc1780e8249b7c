"""Registry promotion by aliases: ``champion`` moves only to a model that beats it on the same data.

The current champion is re-scored on the new comparison's validation set unless its recorded
score was measured on exactly that set (same fingerprint); the decision and both scores are
written onto the new model version as tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER = "champion", "challenger"


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


def current_champion(client: MlflowClient, name: str):  # noqa: ANN201
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def promote(client: MlflowClient, name: str, version: str, val_auc: float, val_fingerprint: str,
            score_champion: Callable[[str], float]) -> Decision:
    """Give ``version`` the champion alias if it beats the champion on this validation set, else challenger."""
    champ = current_champion(client, name)
    if champ is None:
        alias, champ_auc, reason = CHAMPION, None, "no champion yet"
    else:
        if champ.tags.get("medtl.val_fingerprint") == val_fingerprint and "medtl.val_auc" in champ.tags:
            champ_auc = float(champ.tags["medtl.val_auc"])
        else:
            champ_auc = float(score_champion(f"models:/{name}/{champ.version}"))
        if val_auc > champ_auc:
            alias, reason = CHAMPION, f"val AUC {val_auc:.4f} beats champion v{champ.version} ({champ_auc:.4f}) on the same validation data"
        else:
            alias, reason = CHALLENGER, f"val AUC {val_auc:.4f} does not beat champion v{champ.version} ({champ_auc:.4f}) on the same validation data"
    client.set_registered_model_alias(name, alias, version)
    for key, value in {"medtl.val_auc": f"{val_auc:.6f}", "medtl.val_fingerprint": val_fingerprint,
                       "medtl.decision": alias, "medtl.decision_reason": reason}.items():
        client.set_model_version_tag(name, version, key, value)
    return Decision(name, str(version), alias, val_auc, champ_auc, None if champ is None else str(champ.version), reason)
