"""What a comparison's runs show, computed without any MLflow store (``medtl.tracking.artifacts``)."""

import json

from medtl import api
from medtl.tracking.artifacts import arm_artifacts, comparison_start, comparison_summary
from tests.conftest import tiny_config


def test_artifacts_are_a_pure_function_of_the_results(marker_data, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(marker_data, strategies=[{"name": "frozen", "epochs": 1}, {"name": "lp-ft", "probe_epochs": 1, "epochs": 1}])
    cfg["data"].update(source_domains=["scanner_a"], target_domains=["scanner_b"])
    cfg["shift"] = {"max_items": 10, "permutations": 5, "gradcam": 1}
    comp = api.compare(cfg, track=False)
    assert comp.run_id is None  # nothing was tracked
    lpft = comp.arms[1]
    files = arm_artifacts(lpft, comp, {"medtl.git_commit": "x"}, None)
    assert files.paths() == {"plots/confusion_matrix.png", "plots/roc.png", "plots/calibration.png", "plots/learning_curves.png",
                             "plots/shift/embedding.png", "plots/shift/cka.png", "plots/shift/domains_auc.png",
                             "plots/shift/gradcam.png", "predictions.json", "history.json", "model_card.md"}
    assert files.dicts["history.json"]["probe_history"] == lpft.probe.history  # lp-ft's first phase travels with it
    preds = files.tables["predictions.json"]
    assert len(preds) == len(lpft.test_labels) and "path" not in preds.columns
    start, summary = comparison_start(comp), comparison_summary(comp)
    assert {"config.yaml", "data.json", "curation/report.md"} <= start.paths()
    assert summary.paths() == {"plots/comparison.png", "comparison.md", "shift.md", "plots/shift/cka.png", "selection.md"}
    texts = [*files.texts.values(), *start.texts.values(), *summary.texts.values(), json.dumps(start.dicts["data.json"])]
    paths = [it["path"] for items in comp.data.splits.values() for it in items]
    assert not any(p in t for p in paths for t in texts), "a file path reached an artifact"
