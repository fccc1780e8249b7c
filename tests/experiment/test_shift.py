"""A comparison with source and target domains logs shift metrics, the CKA profile and the pictures to MLflow."""

import pytest
from mlflow.tracking import MlflowClient

from medtl import api
from tests.conftest import artifact_files, tiny_config


def test_comparison_with_source_and_target_logs_shift(marker_data, mlflow_uri) -> None:
    cfg = tiny_config(marker_data)
    cfg["data"]["source_domains"] = ["scanner_a"]
    cfg["data"]["target_domains"] = ["scanner_b"]
    cfg["shift"] = {"max_items": 10, "permutations": 20, "adabn": True, "tent": True, "gradcam": 1}
    cfg["tracking"]["system_metrics"] = False
    comp = api.compare(cfg)
    assert all(it["domain"] == "scanner_a" for s in ("train", "val") for it in comp.data.splits[s])
    client = MlflowClient(mlflow_uri, registry_uri=mlflow_uri)
    parent = client.get_run(comp.run_id)
    for k in ("shift.mmd", "shift.coral", "shift.frechet", "shift.proxy_a_distance", "shift.mmd.scanner_b"):
        assert k in parent.data.metrics, k  # the frozen ImageNet extractor's distances
    assert {"shift.md", "plots/shift/cka.png"} <= artifact_files(client, comp.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{comp.run_id}'")
    assert len(children) == 2
    for r in children:
        m = r.data.metrics
        for k in ("shift.mmd", "shift.mmd_p", "shift.coral", "shift.frechet", "shift.proxy_a_distance",
                  "source.test_auc", "target.test_auc", "target.test_auc_ci_low", "drop.test_auc", "drop.test_auc.scanner_b",
                  "test_ece.scanner_a", "test_ece.scanner_b", "adabn.test_auc.scanner_b", "adabn.target.test_auc",
                  "tent.test_auc.scanner_b", "tent.target.test_auc", "tent.drop.test_auc"):
            assert k in m, (r.data.tags["medtl.strategy"], k)
        assert {"select.source_val", "select.snd", "select.entropy", "select.dev"} <= set(m)  # label-free validators
        assert m["select.source_val"] == pytest.approx(m["best_val_auc"])
        assert 0 <= m["shift.mmd_p"] <= 1 and 0 <= m["shift.proxy_a_distance"] <= 2
        assert m["drop.test_auc"] == pytest.approx(m["source.test_auc"] - m["target.test_auc"])
        cka = {k: v for k, v in m.items() if k.startswith("cka.")}
        assert set(cka) == {"cka.stem", "cka.stage1", "cka.stage2"}
        if r.data.tags["medtl.strategy"] == "frozen":  # the frozen arm's backbone is the extractor
            assert all(v == pytest.approx(1.0) for v in cka.values())
            assert m["shift.mmd"] == pytest.approx(parent.data.metrics["shift.mmd"])
        else:
            assert all(0.0 <= v <= 1.0 + 1e-9 for v in cka.values()) and min(cka.values()) < 0.9999
        assert {"plots/shift/embedding.png", "plots/shift/cka.png", "plots/shift/domains_auc.png",
                "plots/shift/gradcam.png"} <= artifact_files(client, r.info.run_id)
    assert len(comp.data.splits["target"]) > 0 and all(it["label"] == -1 for it in comp.data.splits["target"])
    chosen = comp.selection_table()
    assert list(chosen["validator"]) == ["source_val", "snd", "entropy", "dev"]
    assert set(chosen["picks"]) <= {"frozen", "full"} and set(chosen["rank_on_target_auc"]) <= {1, 2}
    for r in chosen.itertuples():
        assert parent.data.tags[f"medtl.select.{r.validator}"] == r.picks
        assert parent.data.metrics[f"select.{r.validator}.rank"] == r.rank_on_target_auc
    assert "selection.md" in artifact_files(client, comp.run_id)
    table = comp.shift_table()
    assert list(table["strategy"]) == ["frozen", "frozen+adabn", "frozen+tent", "full", "full+adabn", "full+tent"]
    cka_cols = [c for c in table.columns if c.startswith("cka.")]
    assert cka_cols == ["cka.stem", "cka.stage1", "cka.stage2"]  # the backbone's order, not alphabetical
    full = comp.arms[[a.strategy for a in comp.arms].index("full")]
    row = table[table["strategy"] == "full"].iloc[0]
    assert [row[c] for c in cka_cols] == pytest.approx([full.metrics[c] for c in cka_cols])
