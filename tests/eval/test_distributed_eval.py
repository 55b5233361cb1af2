"""Evaluation under torchrun (2 gloo ranks) equals one process on the same images.

This is a test of aggregation only: the LPIPS networks are randomly initialised (explicitly,
pretrained=False, fixed seed), the FID features come from a small random network (a
2048-d InceptionV3 would make the matrix square root dominate the test's time), and the
LPIPS-Alex weight files given to `flowmo eval` are random. None of the numbers means anything
about image quality.

Run as a script (``python -m torch.distributed.run ... test_distributed_eval.py --worker OUT
MODEL WEIGHTS``) it is the worker: each rank evaluates every second image.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


N_IMAGES = 8  # 4 per rank, in batches of 2 as in the single process: equal shapes, equal bits
CODEBOOK = 8


class _Features(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([torch.tanh(y).mean(dim=(2, 3)), torch.relu(y).amax(dim=(2, 3))], dim=1)


def _data():
    """Originals, reconstructions and tokens (2 groups) of image ids 0..N-1, from fixed seeds."""
    from flowmo.data.photos import held_out_photos

    x = held_out_photos(32)[:N_IMAGES]
    g = torch.Generator().manual_seed(3)
    r = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    tokens = torch.randint(0, CODEBOOK, (N_IMAGES, 4, 2), generator=g)
    tokens[:, :, 1] = tokens[:, :, 1] % 3  # the second group uses 3 of the 8 codes
    return x, r, tokens


def _evaluator():
    from flowmo.metrics import Evaluator
    from flowmo.nets import lpips_alex, lpips_vgg

    torch.manual_seed(0)
    nets = {"vgg": lpips_vgg(pretrained=False), "alex": lpips_alex(pretrained=False)}
    return Evaluator(lpips_nets=nets, inception=_Features(), codebook_size=CODEBOOK, bits_per_pixel=0.25,
                     keep_examples=2)


def evaluate(ids):
    """Evaluate the images ``ids`` in batches of 2; returns compute(), per-image values and example ids."""
    ev = _evaluator()
    x, r, tokens = _data()
    for s in range(0, len(ids), 2):
        sel = torch.tensor(ids[s:s + 2])
        ev.update(x[sel], r[sel], ids=sel, tokens=tokens[sel], decoder_calls=3, seconds=0.5 * len(sel))
    res = ev.compute()
    per = {k: v.tolist() for k, v in ev.per_image().items()}
    ex = ev.examples()
    return {"metrics": res, "per_image": per,
            "examples": {k: [e["id"] for e in ex[k]] for k in ("best", "worst")}}


def cli_args(model, weights, out):
    return ["--model", str(model), "--data", "builtin", "--limit", "6", "--steps", "2", "--batch-size", "1",
            "--weights-dir", str(weights), "--lpips", "alex", "--no-fid", "--output", str(out), "--quiet",
            "--device", "cpu"]


def _worker(out, model, weights):
    import torch.distributed as dist

    from flowmo.cli.eval import main

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(out)
    result = evaluate(list(range(N_IMAGES))[rank::world])
    (out / f"evaluator_rank{rank}.json").write_text(json.dumps(result))
    assert main(cli_args(model, weights, out / "cli")) == 0
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------ the test
def test_two_ranks_equal_one_process(tmp_path, monkeypatch):
    import flowmo
    from conftest import HANG_GUARD_S  # here, not at the top: the ranks run this file as a script
    from flowmo.cli.eval import main
    from flowmo.nets.alexnet import AlexNet
    from flowmo.nets.lpips import LPIPS

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)
    torch.manual_seed(0)
    model = flowmo.build(flowmo.flowmo_tiny()).save_pretrained(tmp_path / "model")
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(7)
    torch.save(AlexNet(include_classifier=False).state_dict(), weights / "alexnet-owt-7be5be79.pth")
    torch.save(LPIPS("alex").heads().state_dict(), weights / "alex.pth")
    ddp = tmp_path / "ddp"
    ddp.mkdir()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), "--worker", str(ddp), str(model), str(weights)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # one intra-op thread, as on the ranks: float32 convolutions split over a different number
    # of threads round differently, and the per-image values are compared bit for bit
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = json.loads(json.dumps(evaluate(list(range(N_IMAGES)))))
        assert main(cli_args(model, weights, tmp_path / "single")) == 0
    finally:
        torch.set_num_threads(threads)

    # --- the evaluator: per-image values, means, codebook and examples equal; FID to 1e-6
    ranks = [json.loads((ddp / f"evaluator_rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank gets the whole result
    dist_res = ranks[0]
    assert dist_res["per_image"] == single["per_image"]  # exactly, image by image
    assert dist_res["examples"] == single["examples"]
    sm, dm = single["metrics"], dist_res["metrics"]
    assert dm["n_images"] == N_IMAGES
    for k in ("psnr", "psnr_batches_of_5", "ssim", "lpips_vgg", "lpips_alex", "codebook",
              "decoder_calls_per_image", "seconds_per_image", "bits_per_pixel"):
        assert dm[k] == sm[k], k
    assert sm["rfid"] > 1e-3 and abs(dm["rfid"] - sm["rfid"]) <= 1e-6
    assert dm["codebook"]["per_group"][1]["codes_used"] == 3

    # --- flowmo eval under torchrun equals flowmo eval in one process
    a = json.loads((tmp_path / "single" / "metrics.json").read_text())
    b = json.loads((ddp / "cli" / "metrics.json").read_text())
    assert b["protocol"]["world_size"] == 2 and a["protocol"]["world_size"] == 1
    for k in ("n_images", "psnr", "ssim", "lpips_alex", "codebook", "decoder_calls_per_image", "bits_per_pixel"):
        assert a["metrics"][k] == b["metrics"][k], k
    assert a["best_worst"] == b["best_worst"]
    assert (tmp_path / "single" / "per_image.csv").read_text() == (ddp / "cli" / "per_image.csv").read_text()
    assert np.array_equal(np.asarray(__import__("PIL.Image").Image.open(tmp_path / "single" / "best_worst.png")),
                          np.asarray(__import__("PIL.Image").Image.open(ddp / "cli" / "best_worst.png")))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:])
    else:
        raise SystemExit("usage: test_distributed_eval.py --worker OUT_DIR MODEL_DIR WEIGHTS_DIR")
