"""AdaBN changes batch-norm running statistics and nothing else."""

import torch

from medtl.models.transfer import create_model
from medtl.training.adabn import adapt_bn


def test_adabn_changes_only_bn_running_statistics() -> None:
    model, _ = create_model("tiny", 2)
    model.eval()
    before_params = {k: v.clone() for k, v in model.named_parameters()}
    before_buffers = {k: v.clone() for k, v in model.named_buffers()}
    target = [torch.randn(8, 3, 32, 32) * 3 + 2 for _ in range(3)]
    adapted = adapt_bn(model, target)
    for k, v in adapted.named_parameters():
        assert torch.equal(v, before_params[k]), k  # weights, BN affine and head untouched
    changed = {k for k, v in adapted.named_buffers() if not torch.equal(v, before_buffers[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert {k.rsplit(".", 1)[0] for k in changed} == {k.rsplit(".", 1)[0] for k in before_buffers if k.endswith("running_mean")}
    for k, v in model.named_buffers():  # the original model is left as it was
        assert torch.equal(v, before_buffers[k])
    assert not adapted.training and all(not m.training for m in adapted.modules())
    # the first BN's new mean is the target's per-channel mean of its input
    stem_conv = adapted.backbone.stages["stem"][0]
    with torch.no_grad():
        expected = torch.cat([stem_conv(x) for x in target]).mean((0, 2, 3))
    assert torch.allclose(adapted.backbone.stages["stem"][1].running_mean, expected, atol=1e-5)
    out_a, out_m = adapted(target[0]), model(target[0])
    assert not torch.allclose(out_a, out_m)
