"""Parity with the released FlowMo: every recorded tensor of every reference folder, to 1e-4.

Everything is built from each folder's meta.json alone: the spec from ``derived``, the
weights from ``state_dict_shapes`` with the release's test-vector recipe, and what to feed
each recorded output from ``recorded``.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from flowmo import GuidanceSpec, SamplerSpec
from flowmo.folders.convert import load_release_checkpoint
from flowmo.folders.release import spec_from_reference_meta
from flowmo.folders.reference import reference_state_dict, state_dict_checksum
from flowmo.losses import ModeSeeking
from flowmo.samplers import sample
from flowmo.spec import ModeSeekingSpec

from conftest import reference_folders

ATOL = 1e-4
FOLDERS = reference_folders()


def test_reference_folders_found():
    assert FOLDERS, "no reference folder (meta.json + tensors.safetensors) was found"


@pytest.fixture(scope="module", params=FOLDERS, ids=[f.name for f in FOLDERS])
def ref(request, tmp_path_factory):
    folder = request.param
    meta = json.loads((folder / "meta.json").read_text())
    tensors = load_file(str(folder / "tensors.safetensors"))
    state = reference_state_dict(meta["state_dict_shapes"])
    # the release's layout: a torch.save'd dict, read back through flowmo.folders
    path = tmp_path_factory.mktemp(folder.name) / "checkpoint.pth"
    torch.save({"model_ema_state_dict": state, "model_state_dict": state, "total_steps": 0}, path)
    model = load_release_checkpoint(path, spec=spec_from_reference_meta(meta))
    return meta, tensors, state, model


def close(actual, expected, what):
    actual = actual.detach().float().reshape(expected.shape)
    err = (actual - expected.float()).abs().max().item()
    assert err <= ATOL, f"{what}: max abs error {err:.3g} > {ATOL}"


def test_weights_checksum(ref):
    meta, _, state, _ = ref
    assert state_dict_checksum(state) == pytest.approx(meta["weights_checksum"], rel=1e-12, abs=1e-9)


def test_encoder_and_quantizer(ref):
    meta, T, _, model = ref
    rec = meta["recorded"]["quantizer"]
    assert rec["mode"] == "training"
    with torch.no_grad():
        code = model.encode(T["image"])
        close(code, T["code_prequant"], "encoder code")
        model.quantizer.train()
        q = model.quantize(code)
        model.quantizer.eval()
    close(q.values, T["code_quant"], "LFQ values")
    close(q.loss, T["quantizer_loss"], "quantizer loss")
    groups = model.quantizer.codes_to_group_indices(q.values)
    assert torch.equal(groups.flatten(), T["lfq_indices"]), "LFQ group indices (batch, token, group order)"
    # the per-token index and the group indices describe the same bits
    assert torch.equal(model.quantizer.group_indices_to_codes(groups), model.quantizer.indices_to_codes(q.indices))


def test_velocities(ref):
    meta, T, _, model = ref
    rec = meta["recorded"]["velocity"]
    cond = T[rec["code"]]
    with torch.no_grad():
        close(model.conditioning(T["code_quant"]), cond, "code with mask")
        v = model.decoder_velocity(T[rec["x_t"]], T[rec["t"]], cond)
        v_null = model.decoder_velocity(T[rec["x_t"]], T[rec["t"]], torch.zeros_like(cond))
        # the public API: quantized code in, mask added inside; None = unconditional
        v_api = model.velocity(T[rec["x_t"]], T[rec["t"]], T["code_quant"])
        v_api_null = model.velocity(T[rec["x_t"]], T[rec["t"]], None)
    out = {v_name: kind for v_name, kind in rec["outputs"].items()}
    for name, kind in out.items():
        got, got_api = (v, v_api) if kind == "code" else (v_null, v_api_null)
        close(got, T[name], name)
        close(got_api, T[name], f"{name} (FlowMo.velocity)")


def test_stage1a_loss(ref):
    meta, T, _, model = ref
    rec = meta["recorded"]["stage1a_loss"]
    assert rec["perceptual_weight"] == 0.0 and rec["cfg_dropout"] is False
    t = torch.sigmoid(T["rf_nt"])  # rec["time"]: "t = sigmoid(rf_nt)"
    model.train()
    try:
        with torch.no_grad():
            loss = model.loss(T["image"], t=t, noise=T[rec["noise"]], cfg_dropout=False)
    finally:
        model.eval()
    diffusion_name, total_name = rec["outputs"]
    close(loss.terms["diffusion"], T[diffusion_name], "diffusion loss")
    close(loss.total, T[total_name], "total loss")
    assert "perceptual" not in loss.terms


def test_samples(ref):
    meta, T, _, model = ref
    assert meta["recorded"]["samples"], "no recorded samples"
    for rec in meta["recorded"]["samples"]:
        _check_sample(model, T, rec)


def _check_sample(model, T, rec):
    if rec["schedule"] == "pow":
        grid = {"name": "pow", "p": rec["pow_p"]}
    else:
        grid = {"name": rec["schedule"]}
    spec = SamplerSpec(
        steps=rec["steps"], grid=grid, clip=rec["clipped"],
        guidance=GuidanceSpec.model_validate({"scale": rec["cfg_scale"], "interval_sigma": rec["cfg_interval_edm_sigma"]}),
    )
    out = sample(model.decoder_velocity, T[rec["noise"]], T[rec["code"]], spec)
    close(out.images, T[rec["tensor"]], rec["tensor"])
    # the same through the public API (quantized code in)
    code = T[rec["code"]][..., :-1]
    close(model.decode(code, noise=T[rec["noise"]], sampler=spec).images, T[rec["tensor"]], rec["tensor"] + " (decode)")


def test_posttrain_chain(ref):
    meta, T, _, model = ref
    rec = meta["recorded"]["posttrain"]
    objective = ModeSeeking(ModeSeekingSpec(k=rec["k"]))
    with torch.no_grad():
        z = objective.chain(model.decoder_velocity, T[rec["noise"]], T[rec["code"]], T[rec["uniform_draws"]])
    close(z, T[rec["output"]], rec["output"])
    # the spec built from meta.json carries k
    assert model.spec.posttrain.k == rec["k"]
