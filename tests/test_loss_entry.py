"""FlowMo.loss / loss_draws / posttrain_loss at their entry: with check_values=False only the
value reads are skipped; types, shapes and devices are always checked, each error naming the
argument."""

import pytest
import torch

import flowmo
from flowmo.testing.syncs import count_host_syncs

S = flowmo.get_preset("tiny").image_size


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return flowmo.build(flowmo.get_preset("tiny")).train()


def images(model, b=2):
    s = model.spec.image_size
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("check_values", [True, False])
@pytest.mark.parametrize("bad", [
    torch.tensor([0.5, 2.0]), torch.tensor([5, 7]), torch.ones(1, dtype=torch.bool), torch.tensor(True),
    torch.ones(3, dtype=torch.bool), "false", 0.5, [True, False], None,
], ids=["float", "int", "(1,)", "scalar", "(3,)", "str", "float-number", "list", "None"])
def test_cfg_dropout_must_be_a_bool_or_the_keep_mask(model, bad, check_values):
    with pytest.raises(TypeError, match=r"^cfg_dropout must be a bool or a \(2,\) bool tensor"):
        model.loss(images(model), cfg_dropout=bad, check_values=check_values)


def test_cfg_dropout_accepts_the_keep_mask_and_bools(model):
    x = images(model)
    draws = model.loss_draws(x, torch.Generator().manual_seed(0))
    keep = torch.ones(2, dtype=torch.bool)
    a = model.loss(x, t=draws["t"], noise=draws["noise"], cfg_dropout=keep).total
    b = model.loss(x, t=draws["t"], noise=draws["noise"], cfg_dropout=False).total
    assert torch.equal(a, b)  # keeping every row is no dropout


@pytest.mark.parametrize("check_values", [True, False])
@pytest.mark.parametrize("kw,name", [
    ({"noise": torch.randn(1, 3, S, S)}, "noise"),
    ({"noise": torch.randn(3, S, S)}, "noise"),
    ({"noise": torch.zeros(2, 3, S, S, dtype=torch.int64)}, "noise"),
    ({"t": torch.rand(3)}, "t"),
    ({"t": "0.5"}, "t"),
], ids=["noise-batch-1", "noise-3d", "noise-int", "t-(3,)", "t-str"])
def test_layout_checks_hold_without_value_checks(model, kw, name, check_values):
    x = images(model)
    with pytest.raises((TypeError, ValueError), match=rf"^{name} "):
        model.loss(x, check_values=check_values, **kw)


def test_a_number_t_works_without_value_checks(model):
    x = images(model)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    a = model.loss(x, t=0.5, noise=noise, cfg_dropout=False, check_values=False).total
    b = model.loss(x, t=torch.full((2,), 0.5), noise=noise, cfg_dropout=False).total
    assert torch.equal(a, b)


def test_without_value_checks_nothing_is_read(model):
    x = images(model)
    draws = model.loss_draws(x, torch.Generator().manual_seed(0))
    with count_host_syncs() as syncs:
        model.loss(x, check_values=False, **draws)
    assert syncs.count == 0, syncs.report()


@pytest.mark.parametrize("args,err,match", [
    (([[1.0]],), TypeError, "^images must be a torch.Tensor"),
    ((torch.zeros(2, 5),), ValueError, "^images "),
    ((torch.zeros(2, 3, S, S, dtype=torch.uint8),), TypeError, "^images "),
    ((None, 5), TypeError, "^generator must be a torch.Generator"),
], ids=["list", "shape", "uint8", "generator"])
def test_loss_draws_checks_its_arguments(model, args, err, match):
    if args[0] is None:
        args = (images(model),) + args[1:]
    with pytest.raises(err, match=match):
        model.loss_draws(*args)
