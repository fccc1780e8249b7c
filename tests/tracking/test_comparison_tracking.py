"""A small comparison on the tiny backbone, tracked in a real sqlite MLflow store, read back through MlflowClient."""

import base64
import json
import re
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from medtl import api
from medtl.errors import ScanError
from medtl.privacy import is_hashed
from tests.conftest import artifact_files, tiny_config

PROVENANCE = ("medtl.version", "medtl.git_commit", "medtl.manifest_sha256", "medtl.data_fingerprint", "medtl.seed")


@pytest.fixture(scope="module")
def tracked(identified_data, tmp_path_factory):
    manifest, _ = identified_data
    folder = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # tiny arms last seconds, not the default 10 s
    cfg = tiny_config(manifest)
    cfg["train"]["bootstrap"] = 50
    comp = api.compare(cfg)
    client = MlflowClient(uri, registry_uri=uri)
    parent = client.get_run(comp.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{comp.run_id}'")
    yield comp, uri, client, parent, {r.data.tags["medtl.strategy"]: r for r in children}, folder
    mp.undo()


def test_parent_and_children_carry_provenance_and_metrics(tracked, identified_data) -> None:
    comp, uri, client, parent, children, _ = tracked
    tags = parent.data.tags
    assert tags["medtl.role"] == "comparison" and parent.info.status == "FINISHED"
    assert set(children) == {"frozen", "full"}
    manifest, _ = identified_data
    from medtl.hashing import file_sha256

    assert tags["medtl.manifest_sha256"] == file_sha256(manifest)
    assert tags["medtl.data_fingerprint"] == comp.data.fingerprint
    assert tags["medtl.version"] == __import__("medtl").__version__
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["medtl.git_commit"])
    assert tags["medtl.weights_sha256"] == "tiny-fixed-seed"
    assert parent.data.params["train.batch_size"] == "8" and parent.data.params["strategies.frozen.epochs"] == "3"
    epochs = {"frozen": 3, "full": 2}
    for name, r in children.items():
        t, m = r.data.tags, r.data.metrics
        assert r.info.status == "FINISHED"
        for key in PROVENANCE:
            assert t[key] == (str(0) if key == "medtl.seed" else tags[key]), key
        assert t["medtl.weights_sha256"] == "tiny-fixed-seed" and t["medtl.strategy"] == name
        assert 0.0 <= m["test_auc"] <= 1.0 and 0.0 <= m["test_acc"] <= 1.0
        assert {"test_auc.scanner_a", "test_auc.scanner_b", "test_acc.scanner_a", "test_acc.scanner_b"} <= set(m)
        assert m["test_auc_ci_low"] <= m["test_auc"] <= m["test_auc_ci_high"]
        assert m["best_val_auc"] == pytest.approx(comp.arms[[a.strategy for a in comp.arms].index(name)].val_auc)
        for key in ("train_loss", "val_loss", "val_auc", "unfrozen_groups", "lr.head"):
            assert [h.step for h in client.get_metric_history(r.info.run_id, key)] == list(range(epochs[name])), key
        assert any(k.startswith("system/cpu_utilization") for k in m), "system metrics are on"
    full = children["full"].info.run_id
    assert {"lr.stem", "lr.stage1", "lr.stage2"} <= set(children["full"].data.metrics)
    assert client.get_metric_history(full, "unfrozen_groups")[0].value == 3.0
    assert client.get_metric_history(children["frozen"].info.run_id, "unfrozen_groups")[0].value == 0.0


def test_artifacts_a_person_would_look_at(tracked) -> None:
    comp, uri, client, parent, children, _ = tracked
    assert {"config.yaml", "data.json", "curation/report.md", "plots/comparison.png", "comparison.md",
            "registry_decision.json"} <= artifact_files(client, parent.info.run_id)
    local = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, tracking_uri=uri))
    summary = (local / "comparison.md").read_text()
    assert "| strategy |" in summary and "frozen" in summary and "full" in summary
    assert "file-" in (local / "curation" / "report.md").read_text(), "the quarantined file is named by a token"
    for name, r in children.items():
        files = artifact_files(client, r.info.run_id)
        assert {"plots/learning_curves.png", "plots/confusion_matrix.png", "plots/roc.png", "plots/calibration.png",
                "predictions.json", "history.json", "model_card.md"} <= files, name
        run_dir = Path(mlflow.artifacts.download_artifacts(run_id=r.info.run_id, tracking_uri=uri))
        table = json.loads((run_dir / "predictions.json").read_text())
        preds = pd.DataFrame(table["data"], columns=table["columns"])
        assert list(preds.columns) == ["domain", "patient", "label", "predicted", "p_clear", "p_marker"]
        assert len(preds) == r.data.metrics["test_n"] and all(is_hashed(p) for p in preds["patient"])
        card = (run_dir / "model_card.md").read_text()
        for section in ("## Intended use", "## Input arrays", "units: HU", "## Data", "## Performance", "## Limitations",
                        "scanner_a", "scanner_b"):
            assert section in card, section
        auc = r.data.metrics["test_auc"]
        assert f"{auc:.3f} [{r.data.metrics['test_auc_ci_low']:.3f}, {r.data.metrics['test_auc_ci_high']:.3f}]" in card


def test_model_signature_example_requirements_and_card(tracked) -> None:
    comp, uri, client, parent, children, _ = tracked
    mv = client.get_model_version_by_alias("tiny-model", "champion")
    info = mlflow.models.get_model_info("models:/tiny-model@champion")
    sig = info.signature
    assert [c.name for c in sig.outputs.inputs] == ["clear", "marker", "label", "error"]
    assert [c.type for c in sig.outputs.inputs] == [mlflow.types.DataType.double] * 2 + [mlflow.types.DataType.string] * 2
    assert [c.name for c in sig.inputs.inputs] == ["path", "content", "image", "filename", "modality", "units", "photometric"]
    assert not any(c.required for c in sig.inputs.inputs)
    local = Path(mlflow.artifacts.download_artifacts("models:/tiny-model@champion"))
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"] == ["content", "filename"]
    assert base64.b64decode(example["data"][0][0])[128:132] == b"DICM", "a made-up DICOM's bytes, not a path"
    reqs = (local / "requirements.txt").read_text().split()
    assert reqs and all("==" in r for r in reqs)
    for r in reqs:
        name, version = r.split("==")
        assert metadata.version(name) == version, r
    assert {"torch", "monai", "mlflow", "pydicom"} <= {r.split("==")[0] for r in reqs}
    assert (local / "artifacts" / "model_card.md").read_text().startswith("# Model card: tiny-model")
    assert mv.description.startswith("# Model card: tiny-model")


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """The CLI in-process: the `tiny` test backbone is registered in this process only."""
    from medtl.cli import main

    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_champion_predicts_like_medtl_predict(tracked, identified_data, capsys) -> None:
    manifest, _ = identified_data
    test = pd.read_csv(manifest)
    test = test[test.split == "test"]
    dcm = next(p for p in test.path if p.endswith(".dcm"))
    nii = next(p for p in test.path if p.endswith(".nii.gz"))
    model = mlflow.pyfunc.load_model("models:/tiny-model@champion")
    out = model.predict(pd.DataFrame({"path": [dcm]}))
    assert list(out.columns) == ["clear", "marker", "label", "error"] and out["error"][0] is None
    out = out[["clear", "marker"]]
    np.testing.assert_allclose(out.to_numpy().sum(1), 1.0, rtol=1e-6)
    rc, stdout, stderr = _cli(capsys, "predict", "models:/tiny-model@champion", dcm, "--json")
    assert rc == 0, stderr
    cli = json.loads(stdout)[0]["probabilities"]
    np.testing.assert_allclose([cli["clear"], cli["marker"]], out.to_numpy()[0], rtol=1e-5)
    both = model.predict(pd.DataFrame({"path": [dcm, nii], "domain": ["a", "b"]}))[["clear", "marker"]]
    np.testing.assert_allclose(both.to_numpy()[0], out.to_numpy()[0], rtol=1e-5)
    np.testing.assert_allclose(both.to_numpy().sum(1), 1.0, rtol=1e-6)


def test_declared_arrays_pass_the_signature_in_an_image_column(tracked) -> None:
    from medtl.data.synthetic import phantom
    from medtl.tracking.pyfunc import ScanArray

    model = mlflow.pyfunc.load_model("models:/tiny-model@champion")
    clf = api.load_model("models:/tiny-model@champion")
    arr = np.round(phantom(np.random.default_rng(0), marker=False, size=48, slices=1)[0]).astype(np.int16)  # HU
    direct = clf.predict_proba([ScanArray(arr, modality="CT", units="HU", photometric="MONOCHROME2")])
    said = {"modality": ["CT"] * 2, "units": ["HU"] * 2, "photometric": ["MONOCHROME2"] * 2}
    for form in (pd.DataFrame({"image": [arr, arr], **said}), {"image": [arr, arr], **said},
                 pd.DataFrame({"image": [arr.tolist()] * 2, **said})):
        np.testing.assert_allclose(model.predict(form)[["clear", "marker"]].to_numpy(), np.repeat(direct, 2, 0), rtol=1e-5)
    with pytest.raises(Exception, match="pass a table"):
        model.predict(arr)  # MLflow would spread a bare array over table columns: refused, with the form to use
    with pytest.raises(ScanError, match="does not say what its values are"):
        clf.predict_proba([arr])  # issue 20: an int16 array might be HU or stored values; it must say


def test_no_patient_identifier_reaches_the_store(tracked, identified_data) -> None:
    """Every param, tag, metric name, artifact and registry entry, and the raw store files themselves."""
    comp, uri, client, parent, children, folder = tracked
    _, identifiers = identified_data
    assert any("^" in i for i in identifiers) and any(i.startswith("DEMO-") for i in identifiers)
    texts = []
    for r in [parent, *children.values()]:
        texts += [*r.data.params, *r.data.params.values(), *r.data.tags, *r.data.tags.values(), *r.data.metrics]
    for rm in client.search_registered_models():
        texts += [rm.name, rm.description or "", *rm.tags.values()]
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            texts += [mv.description or "", *mv.tags.values(), mv.source]
    blob = "\n".join(map(str, texts))
    blobs = {"api": blob}
    store_files = [folder / "mlflow.db", *[p for p in (folder / "mlruns").rglob("*") if p.is_file()]]
    assert len(store_files) > 20
    for p in store_files:
        blobs[str(p)] = p.read_bytes().decode("latin-1")
    for ident in identifiers:
        for where, text in blobs.items():
            assert ident not in text, f"{ident!r} found in {where}"


def test_results_read_back_from_mlflow(tracked) -> None:
    comp, uri, client, parent, children, _ = tracked
    table = api.results(comp.run_id)
    mine = comp.table()
    assert list(table["strategy"]) == list(mine["strategy"])
    for col in ("val_auc", "test_auc", "test_acc", "test_auc.scanner_a", "test_acc.scanner_b"):
        np.testing.assert_allclose(table[col].to_numpy(float), mine[col].to_numpy(float), rtol=1e-6, err_msg=col)
    np.testing.assert_allclose(np.array(table["test_auc_ci"].tolist()), np.array(mine["test_auc_ci"].tolist()), rtol=1e-6)
    assert table.attrs["run_id"] == comp.run_id and table.attrs["registry"]["alias"] == "champion"
    arms = api.results(per_arm=True)  # the latest comparison
    assert set(arms["strategy"]) == {"frozen", "full"} and arms["model_uri"].str.startswith("models:/m-").all()


def test_evaluate_reproduces_the_logged_test_metrics(tracked, identified_data, capsys) -> None:
    """Same model, same test scans, same definitions: `medtl evaluate` gives the numbers in the run."""
    comp, uri, client, parent, children, folder = tracked
    manifest, _ = identified_data
    mv = client.get_model_version_by_alias("tiny-model", "champion")
    run = client.get_run(mv.run_id)
    rc, stdout, stderr = _cli(capsys, "evaluate", "models:/tiny-model@champion", str(manifest), "--split", "test",
                              "--bootstrap", "50", "--json")
    assert rc == 0, stderr
    out = json.loads(stdout)
    m = run.data.metrics
    assert out["overall"]["n"] == m["test_n"]
    assert out["overall"]["auc"] == pytest.approx(m["test_auc"], abs=1e-6)
    assert out["overall"]["acc"] == pytest.approx(m["test_acc"], abs=1e-6)
    for d in ("scanner_a", "scanner_b"):
        assert out["domains"][d]["acc"] == pytest.approx(m[f"test_acc.{d}"], abs=1e-6)
    assert out["skipped"] == []
    shift = out["shift"]  # two domains: feature distances between them, the larger as the reference
    assert shift["reference"] in ("scanner_a", "scanner_b")
    other = ({"scanner_a", "scanner_b"} - {shift["reference"]}).pop()
    for k in ("mmd", "mmd_p", "coral", "frechet", "proxy_a_distance"):
        assert f"shift.{k}" in shift and f"shift.{k}.{other}" in shift
    assert 0 < shift["shift.mmd_p"] <= 1 and shift["shift.coral"] >= 0 and shift["shift.frechet"] >= 0


def test_second_comparison_is_challenger_unless_better(tracked, identified_data) -> None:
    """The same data and a worse model (one epoch, tiny rate): the decision is recorded either way."""
    comp, uri, client, parent, children, _ = tracked
    manifest, _ = identified_data
    cfg = tiny_config(manifest, strategies=[{"name": "frozen", "epochs": 1, "lr": 1e-6}])
    cfg["train"]["bootstrap"] = 10
    cfg["tracking"]["system_metrics"] = False
    second = api.compare(cfg)
    d = second.registry
    assert d["previous_champion"] == "1" and d["version"] == "2"
    assert (d["alias"] == "champion") == (d["val_auc"] > d["champion_val_auc"])
    v2 = client.get_model_version("tiny-model", "2")
    assert v2.tags["medtl.decision"] == d["alias"] and "same validation data" in v2.tags["medtl.decision_reason"]
    holder = client.get_model_version_by_alias("tiny-model", d["alias"])
    assert str(holder.version) == "2"


def test_a_bad_scan_costs_only_its_row(tracked, identified_data, tmp_path, capsys) -> None:
    manifest, _ = identified_data
    good = pd.read_csv(manifest).path.iloc[0]
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom" * 30)
    rc, stdout, stderr = _cli(capsys, "predict", "models:/tiny-model@champion", good, str(bad), "--json")
    assert rc == 1 and [r["path"] for r in json.loads(stdout)] == [good]
    assert stderr.strip().splitlines() == [f"medtl: error: {bad}: not a DICOM, NIfTI or image file"]
    odd = tmp_path / "odd.csv"
    pd.DataFrame({"path": [good], "label": ["cyst"], "patient_id": ["x"]}).to_csv(odd, index=False)
    rc, stdout, stderr = _cli(capsys, "evaluate", "models:/tiny-model@champion", str(odd))
    assert rc == 1 and len(stderr.strip().splitlines()) == 1 and "['cyst'] unknown to the model" in stderr
    rc, stdout, stderr = _cli(capsys, "predict", "models:/no-such-model@champion", good)
    assert rc == 1 and stderr.startswith("medtl: error: models:/no-such-model@champion: cannot load this model")


def test_compare_ends_with_what_was_chosen_why_and_where(tracked) -> None:
    from medtl.tracking.results import outcome_lines

    comp, uri, *_ = tracked
    lines = outcome_lines(comp, uri)
    assert lines[0].startswith(f"best: {comp.best.strategy} (validation AUC") and "test set never chooses" in lines[0]
    assert "registered tiny-model v1 as 'champion' (no champion yet)" in lines[1]
    assert any(comp.run_id in ln and "experiment 'tiny'" in ln for ln in lines)
    assert any("mlflow ui --backend-store-uri sqlite:///mlflow.db" in ln for ln in lines), lines


def test_evaluate_scores_the_test_split_unless_told(tracked, identified_data, capsys) -> None:
    """A curated manifest holds the training rows too: by default only its test split is scored, and
    asking for training rows is warned about; the shift metrics computed are printed."""
    comp, uri, client, parent, children, folder = tracked
    manifest, _ = identified_data
    n_test = int((pd.read_csv(manifest).split == "test").sum())
    rc, stdout, stderr = _cli(capsys, "evaluate", "models:/tiny-model@champion", str(manifest), "--bootstrap", "20", "--json")
    assert rc == 0, stderr
    out = json.loads(stdout)
    assert out["split"] == "test" and out["overall"]["n"] == n_test
    rc, stdout, stderr = _cli(capsys, "evaluate", "models:/tiny-model@champion", str(manifest), "--bootstrap", "20")
    assert rc == 0 and "(the test split)" in stdout and "domain shift from" in stdout and "mmd" in stdout
    rc, stdout, stderr = _cli(capsys, "evaluate", "models:/tiny-model@champion", str(manifest), "--bootstrap", "20",
                              "--split", "all")
    assert rc == 0 and "medtl: warning:" in stderr and "train split" in stderr


def test_results_skip_a_newer_comparison_that_failed(tracked) -> None:
    """A comparison that failed after starting must not become "the latest": its table would be empty."""
    comp, uri, client, parent, children, _ = tracked
    failed = client.create_run(parent.info.experiment_id, run_name="crashed", tags={"medtl.role": "comparison"})
    client.set_terminated(failed.info.run_id, "FAILED")
    with pytest.warns(UserWarning, match=f"did not finish: {failed.info.run_id} \\(FAILED\\)"):
        table = api.results()
    assert len(table) and table.attrs["run_id"] != failed.info.run_id and table.attrs["status"] == "FINISHED"


def test_logged_models_sit_in_the_comparison_experiment_and_mlflow_s_current_one_is_untouched(tracked) -> None:
    """The arms' LoggedModels are filed under the comparison's experiment by explicit id; MLflow's
    process-wide current experiment (``mlflow.set_experiment``, and its env var) is never set."""
    import os

    import mlflow.tracking.fluent as fluent

    comp, uri, client, parent, children, _ = tracked
    models = {m.source_run_id: m for m in client.search_logged_models([parent.info.experiment_id])}
    for name, run in children.items():
        m = models[run.info.run_id]
        assert m.experiment_id == parent.info.experiment_id and m.tags["medtl.strategy"] == name
        assert m.params == client.get_run(run.info.run_id).data.params  # the run's params, as Model.log copied them
    assert fluent._active_experiment_id is None and "MLFLOW_EXPERIMENT_ID" not in os.environ
