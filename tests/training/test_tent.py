"""TENT trains the batch-norm affine parameters and nothing else, and lowers the target's prediction entropy."""

import torch

from medtl.models.transfer import create_model
from medtl.training.adabn import adapt_bn
from medtl.training.adaptation import softmax_entropy
from medtl.training.tent import bn_affine_parameters, tent


def _target() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(16, 3, 32, 32, generator=g) * 2 + 1 for _ in range(3)]


def test_tent_changes_only_bn_affine_parameters() -> None:
    torch.manual_seed(0)
    model, _ = create_model("tiny", 3)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = tent(model, _target(), epochs=2, lr=1e-2)
    bn_affine = {k for k, m in adapted.named_modules() if isinstance(m, torch.nn.BatchNorm2d) for k in (f"{k}.weight", f"{k}.bias")}
    changed = {k for k, v in adapted.named_parameters() if not torch.equal(v, before[k])}
    assert changed and changed <= bn_affine and len(changed) == len(bn_affine)  # every BN affine moved, nothing else
    for k, v in model.state_dict().items():  # the model handed in is untouched
        assert torch.equal(v, before[k]), k
    assert not adapted.training and all(p.requires_grad for p in adapted.parameters())
    assert len(bn_affine_parameters(model)) == len(bn_affine)


def test_tent_lowers_target_entropy_and_is_adabn_without_epochs() -> None:
    torch.manual_seed(0)
    model, _ = create_model("tiny", 3)
    model.eval()
    target = _target()
    adabn = adapt_bn(model, target)
    zero = tent(model, target, epochs=0)
    for (k, a), b in zip(adabn.state_dict().items(), zero.state_dict().values()):
        assert torch.equal(a, b), k  # no entropy steps: exactly AdaBN
    adapted = tent(model, target, epochs=3, lr=1e-2)
    with torch.no_grad():
        h_adabn = float(sum(softmax_entropy(adabn(x)) for x in target))
        h_tent = float(sum(softmax_entropy(adapted(x)) for x in target))
    assert h_tent < h_adabn
