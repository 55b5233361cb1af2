"""weights_digest: the documented SHA-256 framing recomputed with numpy, and what it depends on
(values, names, dtypes, shapes) and does not (key order, requires_grad, save/load)."""

import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowmo
from flowmo.state_dicts import weights_digest


def _by_hand(arrays):
    """The docstring's recipe over numpy arrays: name, dtype, shape, byte count, then the bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.array(arrays[name], order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        torch_dtype = {np.float32: "torch.float32", np.float64: "torch.float64", np.int64: "torch.int64"}[a.dtype.type]
        h.update(f"{name}\0{torch_dtype}\0{','.join(map(str, a.shape))}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def test_the_digest_follows_the_documented_recipe():
    arrays = {"b.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array(2.5, np.float64),
              "steps": np.array([3, -1], np.int64), "empty": np.zeros((0, 4), np.float32)}
    state = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    assert weights_digest(state) == _by_hand(arrays)
    assert len(weights_digest(state)) == 64


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.text("abcxyz._", min_size=1, max_size=6),
                          st.lists(st.floats(-1e3, 1e3, width=32), min_size=0, max_size=5)),
                min_size=1, max_size=5, unique_by=lambda t: t[0]),
       st.randoms(use_true_random=False))
def test_the_digest_is_the_recipe_whatever_the_key_order(entries, rnd):
    arrays = {name: np.array(values, np.float32) for name, values in entries}
    shuffled = list(arrays.items())
    rnd.shuffle(shuffled)
    state = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in shuffled}
    assert weights_digest(state) == _by_hand(arrays)


def test_any_change_of_value_name_dtype_or_shape_changes_it():
    base = {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.zeros(3)}
    d = weights_digest(base)
    one_ulp = dict(base, w=base["w"].clone())
    one_ulp["w"][1, 2] = torch.nextafter(one_ulp["w"][1, 2], torch.tensor(2.0))
    changed = [one_ulp, {"W": base["w"], "b": base["b"]}, dict(base, w=base["w"].double()),
               dict(base, w=base["w"].reshape(3, 2)), dict(base, w=base["w"].to(torch.bfloat16))]
    digests = [weights_digest(c) for c in changed]
    assert d not in digests and len(set(digests)) == len(digests)
    assert weights_digest({"w": base["w"].t().contiguous().t(), "b": base["b"]}) == d  # memory layout: no matter


def test_a_tokenizer_saved_and_loaded_keeps_it_and_a_reinitialised_one_differs(tmp_path):
    spec = flowmo.flowmo_tiny()
    torch.manual_seed(0)
    a = flowmo.build(spec)
    a.save_pretrained(tmp_path / "a")
    assert weights_digest(flowmo.FlowMo.from_pretrained(tmp_path / "a")) == weights_digest(a)
    assert weights_digest(a) == weights_digest(a.state_dict())
    torch.manual_seed(1)
    b = flowmo.build(spec)
    assert b.spec.fingerprint() == a.spec.fingerprint() and weights_digest(b) != weights_digest(a)


def test_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module or a state dict"):
        weights_digest([torch.zeros(1)])
