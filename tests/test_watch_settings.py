"""`stormwatch watch` settings, in process: every out-of-range value and bad file is named; secrets
come from files or the environment and are never echoed; the LiteLLM class module's edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormwatch.errors import ConfigError
from stormwatch.watch.settings import WatchSettings, load_settings, read_secret_file


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"interval": 0}, "interval"),
        ({"poll": -1}, "poll"),
        ({"lease_seconds": 2}, "lease_seconds"),
        ({"mode": "yolo"}, "mode"),
        ({"workers": 0}, "workers"),
        ({"console_url": "ftp://x"}, "console_url"),
    ],
)
def test_out_of_range_settings_are_named(change: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        WatchSettings(**change).check()  # type: ignore[arg-type]


def test_good_settings_pass() -> None:
    s = WatchSettings(console_url="https://console.example").check()
    assert s.mode == "dry-run"


def test_secret_files(tmp_path: Path) -> None:
    good = tmp_path / "url"
    good.write_text("https://hooks.example/T0/B0/SECRET\n")
    assert read_secret_file(good, "webhook URL") == "https://hooks.example/T0/B0/SECRET"
    cases = {
        "missing": (tmp_path / "nope", "cannot read"),
        "big": (tmp_path / "big", "larger than"),
        "binary": (tmp_path / "bin", "not UTF-8"),
        "empty": (tmp_path / "empty", "one line"),
        "two": (tmp_path / "two", "one line"),
    }
    (tmp_path / "big").write_bytes(b"x" * 5000)
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("a\nb\n")
    for _name, (path, msg) in cases.items():
        with pytest.raises(ConfigError, match=msg) as exc:
            read_secret_file(path, "webhook URL")
        assert "SECRET" not in str(exc.value)


def _toml(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "stormwatch.toml"
    f.write_text(body)
    return f


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ("[watch\n", "not TOML"),
        ("watch = 3\n", "must be a table"),
        ("[watch]\nbogus = 1\n", "unknown setting"),
        ("[watch]\ninterval = true\n", "interval"),
        ("[watch]\ninterval = 'soon'\n", "interval"),
        ("[watch]\npolicies = 3\n", "policies"),
        ("[watch]\npolicies = ['a', 3]\n", "policies"),
    ],
)
def test_bad_settings_files_are_named(tmp_path: Path, body: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        load_settings(_toml(tmp_path, body))


def test_settings_file_values_and_relative_paths(tmp_path: Path) -> None:
    f = _toml(
        tmp_path,
        "[watch]\ninterval = 30\npolicies = 'pol'\nslack_webhook_url_file = 'slack.url'\nmode = 'shadow'\n",
    )
    s = load_settings(f)
    assert s.interval == 30.0 and s.mode == "shadow"
    assert s.policies == (tmp_path / "pol",)
    assert s.slack_webhook_url_file == tmp_path / "slack.url"
    s2 = load_settings(_toml(tmp_path, "[watch]\npolicies = ['a', '/abs/b']\n"))
    assert s2.policies == (tmp_path / "a", Path("/abs/b"))


def test_missing_settings_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such settings file"):
        load_settings(tmp_path / "absent.toml")


def test_litellm_module_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    import stormwatch.integrations.litellm_guardrail as mod

    with pytest.raises(AttributeError, match="no attribute"):
        _ = mod.NoSuchThing  # type: ignore[attr-defined]
    pytest.importorskip("litellm")
    monkeypatch.delenv("STORMWATCH_TOKEN", raising=False)
    cls = mod.StormwatchGuardrail
    with pytest.raises(ValueError, match="needs api_key"):
        cls()
    g = cls(api_key="sw_test", extra_headers=["X-Forwarded-For"], api_base="http://127.0.0.1:9")
    assert g is not None


def test_secret_from_the_environment_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stormwatch.watch.settings import _secret

    monkeypatch.setenv("SW_TEST_SLACK", "https://hooks.example/SECRET")
    assert _secret(None, "SW_TEST_SLACK", "webhook URL") == "https://hooks.example/SECRET"
    monkeypatch.delenv("SW_TEST_SLACK")
    with pytest.raises(ConfigError, match="SW_TEST_SLACK is not set"):
        _secret(None, "SW_TEST_SLACK", "webhook URL")
    assert _secret(None, None, "webhook URL") is None
    f = tmp_path / "s"
    f.write_text("from-file\n")
    assert _secret(f, "SW_TEST_SLACK", "webhook URL") == "from-file"
