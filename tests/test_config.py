"""learnkit.toml: loaded into attrs classes; every bad file gets one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import learnkit
from learnkit._config import parse_config

from .conftest import BASE_CONFIG

ROOT = Path(__file__).resolve().parent.parent


class TestLoad:
    def test_repo_sample_config_loads(self) -> None:
        """The learnkit.toml shipped at the repository root is valid."""
        cfg = learnkit.load_config(ROOT / "learnkit.toml")
        t = cfg.thresholds["max_complexity"]
        assert (t.value, t.attribute, t.limit, t.min, t.max, t.step) == (8, "complexity", "max", 3, 12, 1)
        assert cfg.learning.min_samples == 10
        assert cfg.learning.confidence_threshold == 0.7
        assert cfg.database_path == ROOT / "learnkit.db"

    def test_foreign_tables_are_kept(self, tmp_path: Path) -> None:
        """Tables learnkit does not own are allowed and kept in the document."""
        p = tmp_path / "learnkit.toml"
        p.write_text(BASE_CONFIG + '\n[orchestrator]\nname = "bot"\n')
        cfg = learnkit.load_config(p)
        assert cfg.document["orchestrator"] == {"name": "bot"}

    def test_defaults_for_an_empty_file(self, tmp_path: Path) -> None:
        """An empty file is a valid config with every default."""
        p = tmp_path / "learnkit.toml"
        p.write_text("")
        cfg = learnkit.load_config(p)
        assert cfg.learning == learnkit.LearningConfig()
        assert cfg.storage.path == "learnkit.db"


BAD = [
    ("min_samples = 10", "min_samples = '10'", 3, "learning.min_samples", "expected an integer"),
    ("min_samples = 10", "min_sample = 10", 3, "learning.min_sample", "valid keys: enabled"),
    ("min_samples = 10", "min_samples = 0", 3, "learning.min_samples", "at least 1"),
    ("confidence_threshold = 0.7", "confidence_threshold = 1.5", 4,
     "learning.confidence_threshold", "between 0 and 1"),
    ("value = 8", "value = 20", 11, "thresholds.max_complexity.value", "outside [min, max]"),
    ('limit = "max"', 'limit = "maximum"', 13, "thresholds.max_complexity.limit", "not one of"),
    ("step = 1", "step = 0", 16, "thresholds.max_complexity.step", "must be positive"),
    ("enabled = false", "enabled = 'no'", 2, "learning.enabled", "true or false"),
]


class TestErrors:
    @pytest.mark.parametrize(("old", "new", "line", "key", "problem"), BAD)
    def test_error_names_file_line_key_and_fix(
        self, tmp_path: Path, old: str, new: str, line: int, key: str, problem: str
    ) -> None:
        """Each invalid value is reported as path:line: key: problem, without a deep traceback."""
        p = tmp_path / "learnkit.toml"
        p.write_text(BASE_CONFIG.replace(old, new, 1))
        with pytest.raises(learnkit.ConfigError) as info:
            learnkit.load_config(p)
        msg = str(info.value)
        assert msg.startswith(f"{p.resolve()}:{line}: {key}: "), msg
        assert problem in msg
        err = info.value
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)

    def test_misspelt_table_is_refused_with_a_suggestion(self, tmp_path: Path) -> None:
        """[learnig] is not silently ignored; another tool's [my_tool] still is kept."""
        p = tmp_path / "learnkit.toml"
        p.write_text(BASE_CONFIG.replace("[learning]", "[learnig]") + "\n[my_tool]\nx = 1\n")
        with pytest.raises(learnkit.ConfigError) as info:
            learnkit.load_config(p)
        assert str(info.value) == (f"{p.resolve()}:1: learnig: unknown table [learnig] "
                                   "(did you mean 'learning'?); learnkit's tables: learning, "
                                   "storage, thresholds, privacy, alerts")

    def test_toml_syntax_error_has_line(self, tmp_path: Path) -> None:
        """A TOML syntax error gives the line."""
        p = tmp_path / "learnkit.toml"
        p.write_text("[learning]\nmin_samples = = 3\n")
        with pytest.raises(learnkit.ConfigError, match=r"learnkit.toml:2: not valid TOML"):
            learnkit.load_config(p)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is ConfigNotFoundError (also a FileNotFoundError) with the fix."""
        with pytest.raises(FileNotFoundError, match="learnkit init"):
            learnkit.load_config(tmp_path / "nope.toml")

    async def test_open_with_bad_config_leaves_no_database(self, tmp_path: Path) -> None:
        """learnkit.open() refuses a bad config before creating any file."""
        p = tmp_path / "learnkit.toml"
        p.write_text("[learning]\nmin_samples = -3\n")
        with pytest.raises(learnkit.ConfigError):
            async with learnkit.open(p):
                pass
        assert sorted(x.name for x in tmp_path.iterdir()) == ["learnkit.toml"]


scalars = st.one_of(
    st.integers(-5, 50), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5), st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["min_samples", "confidence_threshold", "failure_cost", "explore",
                         "enabled", "analysis_interval"]),
    value=scalars,
)
def test_any_learning_value_loads_or_raises_config_error(key: str, value: object) -> None:
    """Whatever value a key holds, the result is a valid Config or a ConfigError naming it."""
    import tomlkit

    text = tomlkit.dumps({"learning": {key: value}})
    try:
        cfg = parse_config(text, Path("learnkit.toml"))
    except learnkit.ConfigError as exc:
        assert f"learning.{key}" in str(exc)
    else:
        assert getattr(cfg.learning, key) == value


@pytest.mark.parametrize(("table", "key", "value"), [
    ("storage", "busy_timeout", "inf"),
    ("learning", "failure_cost", "nan"),
    ("learning", "window_days", "1e300"),
    ("learning", "analysis_interval", "inf"),
    ("storage", "busy_timeout", "1e9"),
    ("storage", "pool_size", "10000000"),
    ("storage", "retention_days", "1e300"),
])
def test_numbers_must_be_finite_and_in_range(
    tmp_path: Path, table: str, key: str, value: str
) -> None:
    text = BASE_CONFIG.replace(f"[{table}]\n", f"[{table}]\n{key} = {value}\n")
    p = tmp_path / "learnkit.toml"
    p.write_text(text)
    with pytest.raises(learnkit.ConfigError, match=f"{table}.{key}"):
        learnkit.load_config(p)


@pytest.mark.parametrize("key", ["max", "step"])
def test_threshold_numbers_are_bounded(tmp_path: Path, key: str) -> None:
    """value + step must stay finite: 1e300 is refused, naming the key."""
    text = BASE_CONFIG.replace(f"\n{key} = ", f"\n{key} = 1e300\n# was ")
    p = tmp_path / "learnkit.toml"
    p.write_text(text)
    with pytest.raises(learnkit.ConfigError, match=f"thresholds.max_complexity.{key}"):
        learnkit.load_config(p)
