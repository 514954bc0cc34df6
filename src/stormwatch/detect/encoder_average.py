"""Averaged weights of the second tier's fine-tune (extra ``train-encoder``).

The 6-layer builds end near a training loss of 0.01 with misuse logits at +-10-12, and two builds
that differ only in their data order move single asks by 10-18 logits (``docs/model-card-cascade.md``):
the end point of one SGD path is a noisy pick among equally good weights. Averaging the weights the
path visits late in training is the standard remedy (stochastic weight averaging, Izmailov et al.
2018, arXiv:1803.05407; an exponential moving average, as in Polyak averaging), and costs nothing at
serving time: the averaged model has the same graph.

Two kinds, tracked side by side so one fine-tune can be measured both ways (``bench_cascade.py loso
--averages swa,ema``):

* ``swa``: the uniform mean of the weights after every ``SWA_EVERY``-th step of the last
  ``SWA_TAIL`` share of the steps (the recipe's learning rate decays linearly to zero over them);
* ``ema``: ``avg <- d * avg + (1 - d) * w`` after every step from ``EMA_START`` of the steps on
  (started from the weights there, so the randomly initialised head is not averaged in).

Only trainable parameters are averaged; everything else (the frozen word embeddings, buffers) is the
final model's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AVERAGES", "EMA_DECAY", "EMA_START", "SWA_EVERY", "SWA_TAIL", "WeightAverages"]

AVERAGES = ("swa", "ema")
SWA_TAIL = 0.5
SWA_EVERY = 1
EMA_START = 0.1
EMA_DECAY = 0.998


class WeightAverages:
    """Running averages of ``model``'s trainable weights; call :meth:`update` after each optimiser
    step (``fine_tune(on_step=...)``) and :meth:`state` for a state dict to load."""

    def __init__(self, model: Any, kinds: tuple[str, ...] | list[str]) -> None:
        unknown = sorted(set(kinds) - set(AVERAGES))
        if unknown:
            raise ValueError(f"unknown weight average(s) {unknown}: choose from {list(AVERAGES)}")
        self.model = model
        self.kinds = tuple(kinds)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.avg: dict[str, dict[str, Any]] = {}
        self.count: dict[str, int] = dict.fromkeys(self.kinds, 0)

    def _current(self) -> dict[str, Any]:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach() for n in self.names}

    def update(self, step: int, total: int) -> None:
        """After optimiser step ``step`` (1-based) of ``total``."""
        import torch

        with torch.no_grad():
            cur = self._current()
            if "swa" in self.kinds and step > total * (1 - SWA_TAIL) and (total - step) % SWA_EVERY == 0:
                self._mean_in("swa", cur)
            if "ema" in self.kinds and step >= max(1, int(total * EMA_START)):
                if not self.count["ema"]:
                    self.avg["ema"] = {n: w.clone() for n, w in cur.items()}
                else:
                    for n, w in cur.items():
                        self.avg["ema"][n].mul_(EMA_DECAY).add_(w, alpha=1 - EMA_DECAY)
                self.count["ema"] += 1

    def _mean_in(self, kind: str, cur: dict[str, Any]) -> None:
        k = self.count[kind] + 1
        if k == 1:
            self.avg[kind] = {n: w.clone() for n, w in cur.items()}
        else:
            for n, w in cur.items():
                self.avg[kind][n].add_(w - self.avg[kind][n], alpha=1.0 / k)
        self.count[kind] = k

    def state(self, kind: str) -> dict[str, Any]:
        """The model's state dict with the ``kind`` average in place of its trainable weights."""
        if not self.count.get(kind):
            raise ValueError(f"no {kind} average was taken (too few steps?)")
        state = {n: t.clone() for n, t in self.model.state_dict().items()}
        state.update({n: t.clone() for n, t in self.avg[kind].items()})
        return state
