"""The one "do these tensors fit this model" check (cnnzoo.runs.fit), against modules
written out by hand, and the three places that use it: a checkpoint, packed weights and
--init-from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo.errors import CheckpointError
from cnnzoo.runs.checkpoint import load_into, save_weights
from cnnzoo.runs.fit import check_fit, tensor_fit


def small() -> nn.Sequential:
    # state_dict: 0.weight [4, 1, 3, 3], 0.bias [4], 1.weight/bias/running_* [4],
    # 1.num_batches_tracked [], 3.weight [10, 4], 3.bias [10]
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 10))


def test_exact_tensors_fit_and_match_in_model_order():
    model = small()
    fit = tensor_fit(model, small().state_dict())
    assert fit.matching() == list(model.state_dict())
    assert fit.missing() == fit.unexpected() == fit.wrong_shape() == fit.problems() == []
    fit.require("same.safetensors")  # does not raise


def test_every_kind_of_mismatch_is_named_with_its_shapes():
    tensors = dict(small().state_dict())
    del tensors["3.bias"]
    tensors["0.weight"] = torch.zeros(8, 1, 3, 3)
    tensors["extra.weight"] = torch.zeros(2, 2)
    fit = tensor_fit(small(), tensors)
    assert fit.missing() == ["3.bias"]
    assert fit.unexpected() == ["extra.weight"]
    assert fit.wrong_shape() == ["0.weight"]
    assert "0.weight" not in fit.matching() and "0.bias" in fit.matching()
    assert fit.problems() == [
        "0.weight: the weights have [8, 1, 3, 3], the model [4, 1, 3, 3]",
        "3.bias [10] is missing from the weights",
        "extra.weight [2, 2] is not in the model",
    ]
    with pytest.raises(CheckpointError) as error:
        fit.require("w.safetensors")
    assert str(error.value).startswith(
        "the weights in w.safetensors do not fit the model of the config: 0.weight: ")


def test_optional_tensors_may_be_left_out_but_not_misshapen():
    tensors = {n: t for n, t in small().state_dict().items() if n != "1.num_batches_tracked"}
    check_fit(small(), tensors, "packed", optional=["1.num_batches_tracked"])
    with pytest.raises(CheckpointError, match=r"1\.num_batches_tracked \[\] is missing"):
        check_fit(small(), tensors, "packed")
    tensors["1.num_batches_tracked"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"the weights have \[3\], the model \[\]"):
        check_fit(small(), tensors, "packed", optional=["1.num_batches_tracked"])


def test_a_long_list_of_mismatches_is_cut_and_counted():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])  # 20 tensors
    with pytest.raises(CheckpointError) as error:
        check_fit(model, {}, "empty")
    message = str(error.value)
    assert message.count("is missing from the weights") == 12
    assert message.endswith("; and 8 more")


def test_a_checkpoint_that_does_not_fit_is_refused_before_any_tensor_is_loaded(tmp_path):
    other = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6, 10))
    save_weights(other, tmp_path / "w.safetensors")
    model = small()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"0.weight: the weights have \[6, 1, 3, 3\]"):
        load_into(model, tmp_path / "w.safetensors")
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
