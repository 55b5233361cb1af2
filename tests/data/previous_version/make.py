import json, torch, flowmo
from pathlib import Path
root = Path("tests/data/previous_version")
def bb(depth):
    return {"name": "mmdit", "width": 16, "heads": 1, "depth": depth, "axes_dim": [4, 6, 6]}
specs = {
  "lfq": dict(image_size=16, patch_size=4, code_length=4, code_channels=6, encoder=bb(1), decoder=bb(2),
              quantizer={"name": "lfq", "group_bits": 3},
              time_sampler={"name": "logit_normal", "mean": -0.5, "std": 1.2, "shift": 2.0},
              flow_loss={"name": "rectified_flow", "cfg_dropout": 0.2},
              sampler={"steps": 3, "grid": {"name": "shifted", "shift": 2.5}, "solver": {"name": "heun"},
                       "guidance": {"scale": 2.0, "interval_sigma": [0.1, 2.0]}},
              posttrain={"name": "mode_seeking", "k": 2, "distance": {"name": "l1"}, "weight": 0.5}),
  "fsq": dict(image_size=16, patch_size=4, code_length=4, code_channels=3, encoder=bb(1), decoder=bb(1),
              quantizer={"name": "fsq", "levels": [5, 4, 3]}, sampler={"steps": 2, "grid": {"name": "linear"}}),
}
def r6(t):
    return [round(float(v), 6) for v in t.flatten()]
for key, d in specs.items():
    torch.manual_seed(0)
    model = flowmo.build(flowmo.FlowMoSpec.model_validate(d)).eval()
    # give the zero-initialised layers weights so the outputs depend on every parameter
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    folder = root / key
    model.save_pretrained(folder)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        code = model.encode(x)
        tokens = model.tokenize(x)
        out = model.decode(model.tokens_to_code(tokens), noise=noise).images
    (folder / "expected.json").write_text(json.dumps({
        "inputs": "torch.Generator().manual_seed(2): images = rand(2, 3, 16, 16) * 2 - 1, then noise = randn(2, 3, 16, 16)",
        "code": r6(code), "tokens": tokens.tolist(), "tokens": tokens.tolist(),
        "decoded": r6(out), "bits_per_pixel": model.spec.bits_per_pixel,
        "fingerprint": model.spec.fingerprint(),
        "made_by": "flowmo 0.1.0 at commit 5c20a3a (before issue 15), tests/data/previous_version/README.md",
    }) + "\n")
