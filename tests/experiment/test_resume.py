"""A finished arm is kept on local disk and reloaded by --resume, bit for bit."""

import numpy as np
import pandas as pd

from medtl.experiment.results import Comparison
from medtl.experiment.run import compare
from medtl.config import load_config
from tests.conftest import tiny_config


def test_resume_reloads_finished_arms(marker_data, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tiny_config(marker_data))
    first = compare(cfg)
    again = compare(cfg, resume=True)
    for a, b in zip(first.arms, again.arms):
        assert (a.strategy, a.seed) == (b.strategy, b.seed)
        assert a.metrics == b.metrics
        np.testing.assert_array_equal(a.test_probs, b.test_probs)
        for k, v in a.model.state_dict().items():
            assert (v == b.model.state_dict()[k]).all()
    assert again.best.strategy == first.best.strategy
    loaded = Comparison.load(first.folder)  # the whole comparison back from its run folder, nothing trained
    pd.testing.assert_frame_equal(loaded.table(), first.table())
    assert (loaded.best.strategy, loaded.best.seed) == (first.best.strategy, first.best.seed) and loaded.spec == first.spec
