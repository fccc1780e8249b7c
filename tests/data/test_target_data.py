"""The target site's training scans, without their labels: from a manifest, and from MedMNIST-C's train split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtl.config import CorruptionConfig, DataConfig
from medtl.data.corruptions import corrupt_set
from medtl.data.datasets import few_shot_items, load_data
from tests.data.test_medmnist import _npz


def test_medmnist_c_target_is_corrupted_training_images_without_labels(tmp_path) -> None:
    arrays = _npz(tmp_path / "tinymnist.npz", n=(12, 4, 5))
    cc = CorruptionConfig(dataset="breastmnist", names=["pixelate", "speckle_noise"], severities=[2, 5], size=None,
                          train_per_domain=5)
    bundle = load_data(DataConfig(npz=tmp_path / "tinymnist.npz", source_domains=["clean"], corruptions=cc,
                                  target_domains=["pixelate_s5", "speckle_noise_s2"]))
    target = bundle.splits["target"]
    assert len(target) == 10 and {it["domain"] for it in target} == {"pixelate_s5", "speckle_noise_s2"}
    assert all(it["label"] == -1 for it in target)  # what training sees
    assert all("#train/" in it["path"] for it in target)  # corrupted copies of training images, never of test
    idx = [int(it["path"].split("#train/")[1].split("@")[0]) for it in target]
    assert bundle.target_labels == [int(arrays["train_labels"][i, 0]) for i in idx]  # kept apart, row for row
    first = [it for it in target if it["domain"] == "pixelate_s5"]
    rows = [int(it["path"].split("#train/")[1].split("@")[0]) for it in first]
    expected = corrupt_set([arrays["train_images"][i] for i in rows], "breastmnist", "pixelate", 5, 1_000_003, None)
    assert all(np.array_equal(it["image"], e) for it, e in zip(first, expected))
    test_images = {arrays["test_images"][i].tobytes() for i in range(5)}
    assert not any(np.asarray(arrays["train_images"][i]).tobytes() in test_images for i in idx)
    assert [it["domain"] for it in bundle.splits["train"]] == ["clean"] * 12  # training split unchanged
    # none asked for: no target split
    plain = load_data(DataConfig(npz=tmp_path / "tinymnist.npz", source_domains=["clean"],
                                 corruptions=cc.model_copy(update={"train_per_domain": 0})))
    assert "target" not in plain.splits


def test_manifest_target_train_rows_lose_their_labels(marker_data) -> None:
    df = pd.read_csv(marker_data, dtype=str, keep_default_na=False)
    source, target = sorted(set(df["domain"]))
    bundle = load_data(DataConfig(manifest=marker_data, source_domains=[source]))
    rows = df[(df["split"] == "train") & (df["domain"] == target)]
    t = bundle.splits["target"]
    assert len(t) == len(rows) > 0 and all(it["label"] == -1 and it["domain"] == target for it in t)
    assert {it["domain"] for it in bundle.splits["train"]} == {source} == {it["domain"] for it in bundle.splits["val"]}
    assert target in {it["domain"] for it in bundle.splits["test"]}  # the target's test rows keep labels, for evaluation
    assert all(it["label"] >= 0 for it in bundle.splits["test"])
    assert [bundle.classes[c] for c in bundle.target_labels] == rows["label"].tolist()
    shots = few_shot_items(bundle, 2, seed=0)
    counts = np.bincount([it["label"] for it in shots], minlength=len(bundle.classes))
    assert counts.tolist() == [min(2, int((rows["label"] == c).sum())) for c in bundle.classes]
    assert few_shot_items(bundle, 2, seed=0) == shots  # seeded
    assert all(it["domain"] == target for it in shots)
