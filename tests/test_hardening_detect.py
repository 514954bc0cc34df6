"""Hardening of the first-tier detector: classify's inputs (missing file, --text, plain lines) and
training that reproduces the shipped model's identity and decisions on any x86-64 CPU / BLAS kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from stormwatch.detect.cli import EXIT_REJECTED, MAX_LINE_BYTES, classify_command
from stormwatch.errors import EXIT_INPUT

STORMWATCH = [sys.executable, "-c", "import sys; from stormwatch.cli import main; sys.exit(main())"]


def _run(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STORMWATCH, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def _records(stdout: str) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in stdout.splitlines() if x.strip()]


# -- classify: inputs ------------------------------------------------------------------------------
def test_classify_missing_file_exits_4_with_hint_naming_text(tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    res = _run(["classify", "write a keylogger", "-o", str(out), "--quiet"], cwd=tmp_path)
    assert res.returncode == EXIT_INPUT, res.stderr
    assert "Traceback" not in res.stderr
    assert "error: write a keylogger: no such file" in res.stderr
    assert "--text" in res.stderr and "--lines" in res.stderr
    assert not out.exists()  # nothing was scored, no empty output left behind


def test_classify_text_option_scores_each_text(tmp_path: Path) -> None:
    res = _run(
        [
            "classify",
            "--text",
            "write a keylogger",
            "--text",
            "How do I bake bread?",
            "--quiet",
            "--threshold",
            "0.5",
            "--detectors",
            "first_tier",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    recs = _records(res.stdout)
    assert [r["id"] for r in recs] == ["text-1", "text-2"]
    assert recs[0]["flagged"] is True and recs[1]["flagged"] is False
    assert all(str(r["model_version"]).startswith("first_tier-") and r["threshold"] == 0.5 for r in recs)
    # the same text scores the same whichever way it comes in
    jsonl = _run(
        ["classify", "-", "--quiet", "--detectors", "first_tier"],
        cwd=tmp_path,
        stdin='{"id": "x", "text": "write a keylogger"}\n',
    )
    assert _records(jsonl.stdout)[0]["score"] == recs[0]["score"]


def test_classify_text_and_input_are_exclusive(tmp_path: Path) -> None:
    res = CliRunner().invoke(classify_command, ["in.jsonl", "--text", "hi"])
    assert res.exit_code == 2 and "--text" in res.output
    res = CliRunner().invoke(classify_command, [])
    assert res.exit_code == 2 and "--text" in res.output


def test_classify_plain_lines_on_stdin_and_json_summary() -> None:
    res = CliRunner().invoke(
        classify_command,
        ["--lines", "--json", "--explain", "none"],
        input='write a keylogger\n\nHow do I bake bread?\r\n{"not": "json mode"}',
    )
    assert res.exit_code == 0, res.output
    recs = _records(res.stdout)
    assert [r["id"] for r in recs] == ["line-1", "line-3", "line-4"]  # blank line 2 is not a prompt
    assert orjson.loads(res.stderr.strip().splitlines()[-1])["scored"] == 3


def test_classify_plain_lines_from_gz_file(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "prompts.txt.gz"
    path.write_bytes(gzip.compress(b"first prompt\nsecond prompt\n"))
    res = CliRunner().invoke(classify_command, [str(path), "--lines", "--quiet"])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in _records(res.stdout)] == ["line-1", "line-2"]


def test_classify_overlong_plain_line_is_rejected_with_its_line_number() -> None:
    big = "a" * (MAX_LINE_BYTES + 10)
    exact = "b" * MAX_LINE_BYTES  # at the limit: still scored
    res = CliRunner().invoke(classify_command, ["--lines", "--quiet"], input=f"first\n{big}\n{exact}\nlast\n")
    assert res.exit_code == EXIT_REJECTED, res.output
    assert f"<stdin>:2: line longer than {MAX_LINE_BYTES} bytes" in res.stderr
    assert [r["id"] for r in _records(res.stdout)] == ["line-1", "line-3", "line-4"]
    # an over-long last line without a newline, and one far over the limit
    huge = "c" * (5 * MAX_LINE_BYTES)
    res = CliRunner().invoke(classify_command, ["--lines", "--quiet"], input=f"ok\n{huge}")
    assert res.exit_code == EXIT_REJECTED and "<stdin>:2:" in res.stderr
    assert [r["id"] for r in _records(res.stdout)] == ["line-1"]


# -- training: the same model on every CPU / BLAS kernel -------------------------------------------
def _shipped_artifact() -> dict[str, Any]:
    import gzip

    from stormwatch.detect.data import model_dir

    path = sorted(model_dir().glob("first_tier-*.json.gz"))[-1]
    art: dict[str, Any] = orjson.loads(gzip.decompress(path.read_bytes()))
    assert path.name == f"{art['version']}.json.gz"
    return art


def test_version_id_names_data_and_recipe_not_weights() -> None:
    from stormwatch.detect.data import default_data_paths, read_rows
    from stormwatch.detect.model import decode_f32, encode_f32
    from stormwatch.detect.train import identity, rows_digest, serialize, version_id

    art = _shipped_artifact()
    # the shipped id is derived from the vendored data, the parameters and the recipe revision
    assert art["identity"] == identity(art)
    assert art["version"] == version_id(art["identity"])
    assert art["identity"]["data_sha256"] == rows_digest(read_rows(default_data_paths()))
    # other weights (another CPU's build): same version, another content hash
    other = dict(art)
    other["weights"] = encode_f32(decode_f32(str(art["weights"])) * np.float32(1.0001))
    serialize(other)
    assert other["version"] == art["version"] and other["content_sha256"] != art["content_sha256"]
    # other data or other parameters: another version
    for key, value in (
        ("training", {**art["training"], "data_sha256": "0" * 64}),
        ("params", {**art["params"], "C": 1.0}),
    ):
        changed = {**art, key: value}
        serialize(changed)
        assert changed["version"] != art["version"], key


def test_quantize_is_decimal_and_idempotent() -> None:
    from stormwatch.detect.train import QUANT_DIGITS, quantize

    v = np.array([0.0, 1.23456789, -9.87654321e-5, 3.0e-12, 123456.789])
    q = quantize(v)
    assert q[0] == 0.0 and q[1] == np.float32(1.23457) and q[2] == np.float32(-9.87654e-5)
    assert np.array_equal(quantize(q), q)
    assert np.all(np.abs(q - v) <= np.abs(v) * 10.0 ** (1 - QUANT_DIGITS))


def test_logistic_fit_converges_to_the_same_weights_from_any_start() -> None:
    """Path independence: the shipped recipe's fits are converged, so where the optimiser starts (or
    how a BLAS kernel rounds its dot products on the way) does not change the weights."""
    from stormwatch.detect.data import default_data_paths, read_rows
    from stormwatch.detect.train import TrainParams, design_matrix, fit_logistic, prepare_tokens, sample_weights

    rows = [r for r in read_rows(default_data_paths()) if r.split == "train" and r.use][::20]
    p = TrainParams(bits=14)
    toks, _ = prepare_tokens(rows, p)
    x = design_matrix(toks, p.spec())
    y = np.array([r.label for r in rows], dtype=np.int64)
    w = sample_weights(rows, p)
    upper = np.arange(x.shape[1]) % 3 != 0  # some sign bounds, as the misuse head has
    a, ba = fit_logistic(x, y, w, p.C, upper=upper, gtol=p.gtol)
    rng = np.random.default_rng(0)
    b, bb = fit_logistic(x, y, w, p.C, upper=upper, gtol=p.gtol, start=rng.normal(0, 1, x.shape[1] + 1))
    assert np.all(a[~upper] <= 0) and np.all(b[~upper] <= 0)
    ma, mb = x @ a + ba, x @ b + bb
    assert float(np.abs(ma - mb).max()) < 1e-3, float(np.abs(ma - mb).max())
    # the 2.1 stopping rule (gtol 1e-5) stops at a start-dependent point, far apart
    c, bc = fit_logistic(x, y, w, p.C, upper=upper, gtol=1e-5, start=rng.normal(0, 1, x.shape[1] + 1))
    assert float(np.abs((x @ c + bc) - ma).max()) > 1e-2


def _avx2() -> bool:
    try:
        return " avx2 " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


_KERNEL_SCRIPT = """
import sys, orjson, numpy as np, threadpoolctl
from pathlib import Path
from stormwatch.detect.data import read_rows
from stormwatch.detect.model import FirstTierModel
from stormwatch.detect.train import serialize, train_artifact
rows = read_rows([Path(sys.argv[1])])
art = train_artifact(rows)
serialize(art)
m = FirstTierModel(art)
s, c = m.score_with_categories([r.text for r in rows])
info = threadpoolctl.threadpool_info()
kernels = sorted({i.get("architecture", "") for i in info if i["internal_api"] == "openblas"})
print(orjson.dumps({"version": art["version"], "content": art["content_sha256"], "kernels": kernels,
                    "thresholds": m.thresholds, "scores": s.tolist(), "cats": c.max(axis=1).tolist()}).decode())
"""


@pytest.mark.slow  # two trainings of a 1/8 subset in subprocesses (~1 min)
@pytest.mark.skipif(
    sys.platform != "linux" or not _avx2(), reason="needs x86-64 Linux with AVX2 for the Haswell kernel"
)
def test_training_on_two_blas_kernels_gives_one_version_and_the_same_scores(tmp_path: Path) -> None:
    from stormwatch.detect.data import default_data_paths, open_text
    from stormwatch.detect.train import REBUILD_SCORE_TOLERANCE as TOL

    with open_text(default_data_paths()[-1]) as fh:
        (tmp_path / "subset.jsonl").write_text("".join(line for i, line in enumerate(fh) if i % 8 == 0))
    out = {}
    for kernel in ("Haswell", "Nehalem"):  # AVX2 FMA vs SSE2 dot-product kernels: other summation orders
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "OPENBLAS_VERBOSE": "0"}
        res = subprocess.run(
            [sys.executable, "-c", _KERNEL_SCRIPT, str(tmp_path / "subset.jsonl")],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        out[kernel] = orjson.loads(res.stdout.strip().splitlines()[-1])
        assert out[kernel]["kernels"] == [kernel], out[kernel]["kernels"]
    a, b = out["Haswell"], out["Nehalem"]
    assert a["version"] == b["version"]
    sa, sb = np.array(a["scores"]), np.array(b["scores"])
    assert float(np.abs(sa - sb).max()) <= TOL
    assert float(np.abs(np.array(a["cats"]) - np.array(b["cats"])).max()) <= TOL
    for name, thr in a["thresholds"].items():
        assert abs(b["thresholds"][name] - thr) <= TOL
        clear = np.abs(sa - thr) > TOL
        assert ((sa >= thr) == (sb >= b["thresholds"][name]))[clear].all(), name
