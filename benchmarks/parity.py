"""Max abs error of every recorded reference tensor, per reference folder (prints a table).

    python benchmarks/parity.py [REFERENCE_DIR ...]   (default: ../shared/reference, tests/data/reference)
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowmo import GuidanceSpec, SamplerSpec  # noqa: E402
from flowmo.folders.convert import load_release_checkpoint
from flowmo.folders.release import spec_from_reference_meta
from flowmo.folders.reference import reference_state_dict  # noqa: E402
from flowmo.losses import ModeSeeking  # noqa: E402
from flowmo.samplers import sample  # noqa: E402
from flowmo.spec import ModeSeekingSpec  # noqa: E402


def report(folder: Path) -> list[tuple[str, float]]:
    meta = json.loads((folder / "meta.json").read_text())
    T = load_file(str(folder / "tensors.safetensors"))
    state = reference_state_dict(meta["state_dict_shapes"])
    with tempfile.TemporaryDirectory() as d:
        torch.save({"model_ema_state_dict": state}, Path(d) / "ref.pth")
        m = load_release_checkpoint(Path(d) / "ref.pth", spec=spec_from_reference_meta(meta))
    err = lambda a, b: float((a.detach().float().reshape(b.shape) - b.float()).abs().max())
    rows = []
    rec = meta["recorded"]
    with torch.no_grad():
        code = m.encode(T["image"])
        rows.append(("code_prequant", err(code, T["code_prequant"])))
        m.quantizer.train()
        q = m.quantize(code)
        m.quantizer.eval()
        rows.append(("code_quant", err(q.values, T["code_quant"])))
        rows.append(("lfq_indices (mismatches)", float((m.quantizer.codes_to_group_indices(q.values).flatten() != T["lfq_indices"]).sum())))
        rows.append(("quantizer_loss", err(q.loss, T["quantizer_loss"])))
        v = rec["velocity"]
        cond = T[v["code"]]
        for name, kind in v["outputs"].items():
            c = cond if kind == "code" else torch.zeros_like(cond)
            rows.append((name, err(m.decoder_velocity(T[v["x_t"]], T[v["t"]], c), T[name])))
        m.train()
        lo = m.loss(T["image"], t=torch.sigmoid(T["rf_nt"]), noise=T[rec["stage1a_loss"]["noise"]], cfg_dropout=False)
        m.eval()
        d_name, t_name = rec["stage1a_loss"]["outputs"]
        rows += [(d_name, err(lo.terms["diffusion"], T[d_name])), (t_name, err(lo.total, T[t_name]))]
        for s in rec["samples"]:
            grid = {"name": "pow", "p": s["pow_p"]} if s["schedule"] == "pow" else {"name": s["schedule"]}
            spec = SamplerSpec(steps=s["steps"], grid=grid, clip=s["clipped"], guidance=GuidanceSpec.model_validate(
                {"scale": s["cfg_scale"], "interval_sigma": s["cfg_interval_edm_sigma"]}))
            rows.append((s["tensor"], err(sample(m.decoder_velocity, T[s["noise"]], T[s["code"]], spec).images, T[s["tensor"]])))
        p = rec["posttrain"]
        z = ModeSeeking(ModeSeekingSpec(k=p["k"])).chain(m.decoder_velocity, T[p["noise"]], T[p["code"]], T[p["uniform_draws"]])
        rows.append((p["output"], err(z, T[p["output"]])))
    return rows


def main(argv):
    here = Path(__file__).resolve().parents[1]
    roots = [Path(a) for a in argv] or [p for p in (here.parent / "shared" / "reference", here / "tests" / "data" / "reference") if p.is_dir()]
    seen = set()
    for root in roots:
        for meta in sorted(root.glob("*/meta.json")):
            if meta.parent.name in seen:
                continue
            seen.add(meta.parent.name)
            print(f"\n{meta.parent}\n| tensor | max abs error |\n|---|---|")
            for name, e in report(meta.parent):
                print(f"| {name} | {e:.2g} |")


if __name__ == "__main__":
    main(sys.argv[1:])
