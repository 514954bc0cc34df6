"""The second tier's training rows: per-batch authored weights, and the recipe record's round trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from stormwatch.detect.cli_train import parse_weight_for
from stormwatch.detect.data import Row
from stormwatch.detect.encoder_rows import TrainConfig, config_from_record, recipe_record, repeats, training_rows


def _row(id_: str, source: str = "authored", label: int = 1) -> Row:
    return Row(id_, source, f"text of {id_}", label, "LLMT-06", "train", id_, True, ("LLMT-06",) if label else ())


def test_repeats_take_the_first_matching_prefix_and_only_for_authored_rows() -> None:
    cfg = TrainConfig(authored_weight=3, authored_weights=(("authored-b10-", 1), ("authored-b1", 5)))
    assert repeats(_row("authored-b10-en-a:1"), cfg) == 1  # first match wins over the wider prefix
    assert repeats(_row("authored-b12-en:1"), cfg) == 5
    assert repeats(_row("authored-b8-en-a:1"), cfg) == 3  # no prefix: the default weight
    assert repeats(_row("authored-b10-en-a:1", source="advbench"), cfg) == 1  # public sources once


def test_training_rows_repeat_each_batch_by_its_weight() -> None:
    rows = [_row(f"authored-b10-en:{i}") for i in range(40)] + [_row(f"authored-b8-en:{i}") for i in range(40)]
    plain, _ = training_rows(rows, TrainConfig(calib_share=0.0))
    weighted, _ = training_rows(rows, TrainConfig(calib_share=0.0, authored_weights=(("authored-b10-", 1),)))
    count = Counter(r.text.split()[-1].split(":")[0] for r in weighted)
    assert Counter(r.text.split()[-1].split(":")[0] for r in plain) == {"authored-b10-en": 120, "authored-b8-en": 120}
    assert count == {"authored-b10-en": 40, "authored-b8-en": 120}


def test_the_record_names_batch_weights_only_when_set_and_reads_back() -> None:
    assert "authored_weights" not in recipe_record(TrainConfig())  # builds without them keep their version
    cfg = TrainConfig(authored_weights=(("authored-b10-", 1),), holdout_sources=("advbench",))
    record = json.loads(json.dumps(recipe_record(cfg)))  # as meta.json holds it
    assert record["authored_weights"] == [["authored-b10-", 1]]
    assert config_from_record(record) == cfg
    assert config_from_record(json.loads(json.dumps(recipe_record(TrainConfig())))) == TrainConfig()


@pytest.mark.parametrize("spec", ["authored-b10-", "=2", "authored-b10-=x", "authored-b10-=0", "authored-b10-=21"])
def test_a_bad_weight_spec_is_refused_with_what_was_expected(spec: str) -> None:
    with pytest.raises(click.BadParameter, match="expected PREFIX=N"):
        parse_weight_for(spec)


def test_the_train_command_refuses_a_bad_weight_before_reading_data() -> None:
    from stormwatch.detect.cli import train_command

    res = CliRunner().invoke(train_command, ["--model", "encoder", "--authored-weight-for", "b10", "--out", "x"])
    assert res.exit_code == 2 and "expected PREFIX=N" in res.output


def test_train_passes_its_learning_rate_to_the_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--lr`` reaches the encoder's TrainConfig (recipe 5's 1.2e-4 and one epoch when left out; 6e-5
    and ``--epochs 3`` rebuild recipe 4), and a rate outside (0, 1e-2] is refused before any data is read."""
    import stormwatch.detect.encoder_artifact as artifact
    from stormwatch.detect.cli import train_command

    seen: list[TrainConfig] = []

    def capture(rows, parent, cfg, progress=None):  # type: ignore[no-untyped-def]
        seen.append(cfg)
        return parent / "encoder-x"

    monkeypatch.setattr(artifact, "build_encoder_artifact", capture)
    for args in ([], ["--lr", "6e-5"]):
        args = ["--model", "encoder", "--out", str(tmp_path), "--max-rows", "16", *args]
        res = CliRunner().invoke(train_command, args)
        assert res.exit_code == 0, res.output
    assert [c.lr for c in seen] == [1.2e-4, 6e-5] and TrainConfig().lr == 1.2e-4
    assert [c.epochs for c in seen] == [1.0, 1.0] == [TrainConfig().epochs] * 2
    res = CliRunner().invoke(train_command, ["--model", "encoder", "--lr", "0.5", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--lr" in res.output and len(seen) == 2
