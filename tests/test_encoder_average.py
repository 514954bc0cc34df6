"""Averaged late weights of the second tier's fine-tune (``encoder_average``; extra ``train-encoder``).

Deselected from ``make test`` with the rest of the ``train_encoder`` marker (torch);
``make test-train-encoder`` runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.train_encoder


def test_swa_and_ema_are_the_averages_of_the_weights_the_steps_visit() -> None:
    """A model whose weights equal the step number after each step: SWA is the mean over the last
    half, every SWA_EVERY-th step counted back from the last; EMA starts at EMA_START of the steps
    from the weights there; a frozen parameter keeps the final model's value."""
    import torch

    from stormwatch.detect import encoder_average as ea

    model = torch.nn.Sequential(torch.nn.Embedding(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    avg = ea.WeightAverages(model, ("swa", "ema"))
    total = 40
    ema = None
    for step in range(1, total + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        avg.update(step, total)
        if step >= int(total * ea.EMA_START):
            ema = float(step) if ema is None else ea.EMA_DECAY * ema + (1 - ea.EMA_DECAY) * step
    swa_steps = [s for s in range(1, total + 1) if s > total * (1 - ea.SWA_TAIL) and (total - s) % ea.SWA_EVERY == 0]
    assert swa_steps[-1] == total and len(swa_steps) == int(total * ea.SWA_TAIL) // ea.SWA_EVERY
    swa = avg.state("swa")
    assert torch.allclose(swa["1.weight"], torch.full((2, 3), sum(swa_steps) / len(swa_steps)))
    assert torch.allclose(swa["1.bias"], torch.full((2,), sum(swa_steps) / len(swa_steps)))
    assert torch.allclose(avg.state("ema")["1.weight"], torch.full((2, 3), float(ema)), atol=1e-4)
    assert torch.equal(swa["0.weight"], torch.full((4, 3), float(total)))  # frozen: the final model's
    model.load_state_dict(swa)  # loadable as it is
    assert float(model[1].bias[0]) == pytest.approx(sum(swa_steps) / len(swa_steps))


def test_unknown_or_missing_averages_are_refused() -> None:
    import torch

    from stormwatch.detect.encoder_average import WeightAverages

    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="unknown weight average"):
        WeightAverages(model, ("polyak",))
    with pytest.raises(ValueError, match="no swa average"):
        WeightAverages(model, ("swa",)).state("swa")


def test_train_weight_average_ships_the_averaged_weights_and_records_it(tmp_path: Path) -> None:
    """``stormwatch train --model encoder --weight-average swa``: the recipe records the average (a
    build without one records nothing new, so older builds keep their versions) and the shipped
    graph is not the last weights'."""
    metas = {}
    for kind in ("none", "swa"):
        out = tmp_path / kind
        res = subprocess.run(
            [sys.executable, "-m", "stormwatch", "train", "--model", "encoder", "--out", str(out),
             "--max-rows", "200", "--epochs", "1", "--layers", "1", "--weight-average", kind, "-q"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        (folder,) = [p for p in out.iterdir() if p.name.startswith("encoder-")]
        metas[kind] = json.loads((folder / "meta.json").read_text())
    assert "weight_average" not in metas["none"]["config"]
    assert metas["swa"]["config"]["weight_average"] == "swa"
    assert metas["none"]["version"] != metas["swa"]["version"]
    assert metas["none"]["onnx_sha256"] != metas["swa"]["onnx_sha256"]
