"""learnkit.toml: attrs classes, loaded with cattrs, validated with clear errors."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from cattrs.preconf.tomllib import make_converter

from ._errors import ConfigError, ConfigNotFoundError, LearnkitError, did_you_mean

log = logging.getLogger("learnkit")

__all__ = [
    "ALERT_EVENTS",
    "AlertTargetConfig",
    "AlertsConfig",
    "Config",
    "LearningConfig",
    "LiveConfig",
    "PrivacyConfig",
    "StorageConfig",
    "ThresholdConfig",
    "load_config",
    "parse_config",
]

Number = int | float


@attrs.frozen
class LearningConfig:
    """The ``[learning]`` table: when and how confidently to learn."""

    #: Run the learning loop while a kit is open.
    enabled: bool = True
    #: Seconds between analyses in the learning loop.
    analysis_interval: float = 86400.0
    #: Fewest outcomes on each side of a comparison before anything is said.
    min_samples: int = 10
    #: Least posterior confidence for a recommendation (0.7: ~1 in 3 may be wrong).
    confidence_threshold: float = 0.7
    #: Let the learning loop apply recommendations itself.
    auto_apply: bool = True
    #: Cost of a failure relative to the value of a success (break-even p = c/(1+c)).
    failure_cost: float = 1.0
    #: Fraction of refused work attempted anyway, so a threshold can rise again.
    explore: float = 0.05
    #: Smallest failure-rate difference worth reporting (absolute, 0..1).
    practical_margin: float = 0.05
    #: ... or relative: a risk ratio (rate in / rate out) above this is also worth reporting.
    practical_ratio: float = 2.0
    #: False discovery rate controlled across one whole scan of patterns.
    fdr: float = 0.1
    #: Days of outcomes each analysis of the learning loop looks at; also the
    #: default window of the dashboard, reports, insights and ``thresholds apply``.
    window_days: float = 7.0
    #: Views hide patterns below this confidence; between it and
    #: ``confidence_threshold`` they are shown as *suggestive*, above as *strong*.
    display_floor: float = 0.5
    #: The release recorded on every operation ("" = from LEARNKIT_RELEASE or
    #: OTEL_RESOURCE_ATTRIBUTES' service.version, if set).
    release: str = ""
    #: The context attribute the release is recorded under (``commit``, say).
    release_attribute: str = "release"


@attrs.frozen
class StorageConfig:
    """The ``[storage]`` table: where outcomes live and how they are written."""

    #: SQLite file, relative to the config file.
    path: str = "learnkit.db"
    #: Seconds a writer waits for another process's write lock.
    busy_timeout: float = 5.0
    #: Most records written in one transaction.
    batch_size: int = 2000
    #: Seconds the writer waits before writing a partial batch.
    flush_interval: float = 0.1
    #: Records queued before async callers wait (backpressure).
    max_queue: int = 100_000
    #: A shared PostgreSQL store, ``postgresql://user@host:5432/db`` (no password);
    #: empty: the SQLite file at ``path``. ``LEARNKIT_DATABASE_URL`` overrides it.
    url: str = ""
    #: The environment variable holding the PostgreSQL password (else PGPASSWORD or
    #: ~/.pgpass); the password itself is never written in this file.
    password_env: str = ""
    #: Connections each process keeps to a PostgreSQL store, at most.
    pool_size: int = 4
    #: Delete raw rows older than this many days (0: keep them); rollups and the
    #: threshold history stay, so trends outlive the rows.
    retention_days: float = 0.0
    #: Largest spill file, in MiB: records past twice ``max_queue`` (a sync burst on
    #: the event loop) wait there instead of being dropped. 0: no spill file.
    spill_max_mb: float = 1024.0


@attrs.frozen
class PrivacyConfig:
    """The ``[privacy]`` table: credentials scrubbed from records before storage."""

    #: Replace credential-looking text and context values with ``[REDACTED]``.
    scrub: bool = True
    #: Extra regular expressions whose matches are replaced, beside the built-in ones.
    patterns: list[str] = attrs.Factory(list)
    #: Context keys never treated as credentials although their name suggests one.
    safe_keys: list[str] = attrs.Factory(list)


@attrs.frozen
class ThresholdConfig:
    """One ``[thresholds.NAME]`` table: a gate the controller may move."""

    #: The value in force.
    value: Number
    #: The context key this threshold gates (``complexity``).
    attribute: str
    #: ``max``: attempt only when attribute <= value; ``min``: only when >= value.
    limit: Literal["max", "min"] = "max"
    #: Lowest value the controller may set.
    min: Number | None = None
    #: Highest value the controller may set.
    max: Number | None = None
    #: Largest change in one step.
    step: Number = 1
    #: What the threshold is for (shown by ``learnkit thresholds``).
    description: str = ""
    #: The operation type whose outcomes judge it and that it gates ("" = every type).
    op_type: str = ""


#: Events an alert target may choose (``[alerts.targets.NAME] events``).
ALERT_EVENTS = ("new_cluster", "growing_cluster", "change_point", "threshold_change",
                "rollback", "recommendation")


@attrs.frozen
class AlertTargetConfig:
    """One ``[alerts.targets.NAME]`` table: a webhook and the events it receives."""

    #: Environment variable holding the webhook URL (keeps the secret out of the file).
    url_env: str = ""
    #: The webhook URL itself, when it holds no secret (prefer ``url_env``).
    url: str = ""
    #: ``json``: learnkit's own payload; ``slack``: a Slack incoming-webhook message.
    format: Literal["json", "slack"] = "json"
    #: Which events to send (default: every one of :data:`ALERT_EVENTS`).
    events: list[str] = attrs.Factory(lambda: list(ALERT_EVENTS))
    #: Seconds one HTTP request may take.
    timeout: float = 10.0


@attrs.frozen
class AlertsConfig:
    """The ``[alerts]`` table: webhooks told by the learning loop when something changed."""

    #: Send alerts at all.
    enabled: bool = True
    #: Least seconds between two messages to one target (events meanwhile are batched).
    min_interval: float = 60.0
    #: Most events listed in one message; the rest are counted in it ("and 3 more").
    max_events: int = 20
    #: Attempts after the first failed one, before a message is given up.
    retries: int = 4
    #: Seconds before the first retry; doubled at each retry (capped at 300 s).
    backoff: float = 2.0
    #: Seconds an event is remembered as sent, so it is not sent again meanwhile.
    repeat_after: float = 14 * 86400.0
    #: Fewest failures of a new cluster worth an alert (0: ``learning.min_samples``).
    min_cluster_size: int = 0
    #: The webhooks, by name.
    targets: dict[str, AlertTargetConfig] = attrs.Factory(dict)


@attrs.frozen
class Config:
    """A whole learnkit.toml."""

    learning: LearningConfig = attrs.Factory(LearningConfig)
    storage: StorageConfig = attrs.Factory(StorageConfig)
    thresholds: dict[str, ThresholdConfig] = attrs.Factory(dict)
    privacy: PrivacyConfig = attrs.Factory(PrivacyConfig)
    alerts: AlertsConfig = attrs.Factory(AlertsConfig)
    #: The file it came from (not a key in the file).
    path: Path = attrs.field(default=Path("learnkit.toml"), kw_only=True)
    #: SHA-256 of the file's bytes when read, to detect edits made since.
    digest: str = attrs.field(default="", kw_only=True)
    #: The whole parsed document, including tables learnkit does not own.
    document: dict[str, Any] = attrs.field(factory=dict, kw_only=True, repr=False)
    #: Set by an open kit on the config it hands out (``kit.config``): what
    #: :meth:`update` calls. Not data: not compared, copied or written.
    _updater: Callable[[Mapping[str, Number]], Awaitable[list[Any]]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False)

    @property
    def database_path(self) -> Path:
        """The store's file, resolved against the config file's directory."""
        p = Path(self.storage.path).expanduser()
        return p if p.is_absolute() else self.path.parent / p

    def update(self, **values: Number) -> Awaitable[list[Any]]:
        """Set threshold values by hand: ``kit.config.update(max_complexity=6)``.

        The specification's ``config.update(...)``. Each value goes through the
        controller's path: checked against the threshold's ``min``, ``max``
        and ``step`` (all values are checked before any is written), written
        to learnkit.toml atomically under the file lock, put in force at once,
        and recorded in the history as a ``manual`` change.

        The change is made before this returns, so a call without ``await``
        (as the specification writes it) works. Awaiting the result waits
        until the change is recorded in the store and gives the recorded
        :class:`ThresholdChange` list (empty when every value was already in
        force); unawaited, the record is written in the background and is
        durable when the kit closes. Must be called on the kit's event loop.

        Raises:
            UnknownThresholdError: a name is not a ``[thresholds.NAME]`` table.
            ValueError: a value is not a number, is outside ``[min, max]``, or
                moves further than ``step``; nothing is changed.
            ConfigError: learnkit.toml is invalid now; it is left untouched.
            LearnkitError: this config is not one an open kit handed out.
        """
        if self._updater is None:
            raise LearnkitError(
                "this Config is not bound to an open kit; call kit.config.update(...) "
                "on the kit that should change learnkit.toml"
            )
        return self._updater(values)

    def bind(self, updater: Callable[[Mapping[str, Number]], Awaitable[list[Any]]]) -> None:
        """Let :meth:`update` change thresholds through ``updater`` (the kit does this)."""
        if self._updater is not updater:
            object.__setattr__(self, "_updater", updater)


_OWNED = ("learning", "storage", "thresholds", "privacy", "alerts")


def _strict(kind: type, accept: tuple[type, ...], name: str) -> Any:
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise ValueError(f"expected {name}, got a boolean")
        if not isinstance(value, accept):
            raise ValueError(f"expected {name}, got {type(value).__name__} {value!r}")
        return value

    return hook


def _converter() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=True)
    conv.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))
    conv.register_structure_hook(int, _strict(int, (int,), "an integer"))
    conv.register_structure_hook(str, _strict(str, (str,), "a string"))

    def number(value: Any, _: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
        return value

    conv.register_structure_hook(float, lambda v, t: float(number(v, t)))
    conv.register_structure_hook(Number, number)
    conv.register_structure_hook(Number | None, number)
    return conv


_CONVERTER = _converter()


def _key_of(cattrs_path: str) -> str:
    """``$.thresholds['a'].value`` -> ``thresholds.a.value``."""
    key = re.sub(r"\['([^']*)'\]", r".\1", cattrs_path.removeprefix("$"))
    return key.strip(".")


def find_line(text: str, dotted: str) -> int | None:
    """Best-effort line number of ``table.key`` or ``[table]`` in TOML text."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, -1, -1):
        table, key = parts[:split], parts[split:]
        header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, table)) + r"\s*\]")
        in_table = not table
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("["):
                in_table = bool(table) and bool(header.match(line))
                if in_table and not key:
                    return number
                continue
            if in_table and key and re.match(r"^\s*" + re.escape(key[0]) + r"\s*=", line):
                return number
        if not key and in_table:
            return None
    return None


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ValueError) and str(exc).startswith("expected"):
        return str(exc)
    return str(cattrs.v.format_exception(exc, type_))


def _problem(message: str) -> str:
    message = message.replace("invalid value for type, ", "")
    m = re.match(r"unknown error \((.*) not in literal typing\.Literal\[(.*)\]\)", message)
    if m:
        return f"{m.group(1)!r} is not one of {m.group(2)}"
    m = re.match(r"extra fields found \((.*)\)", message)
    if m:
        return f"unknown key {m.group(1)!r}"
    if message == "required field missing":
        return "required key missing"
    return message


def _valid_keys(table: str) -> str:
    cls: type | None = {
        "learning": LearningConfig, "storage": StorageConfig, "privacy": PrivacyConfig,
        "alerts": AlertsConfig,
    }.get(table)
    if table.startswith("thresholds.") and table.count(".") == 1:
        cls = ThresholdConfig
    elif table.startswith("alerts.targets.") and table.count(".") == 2:
        cls = AlertTargetConfig
    elif table == "":
        return "; valid tables: learning, storage, thresholds, privacy, alerts"
    if cls is None:
        return ""
    return "; valid keys: " + ", ".join(f.name for f in attrs.fields(cls))


#: Upper bounds of numbers whose unbounded values would crash or hang later.
_RANGES = {
    "learning.analysis_interval": 366 * 86400.0,
    "learning.window_days": 3660.0,
    "learning.failure_cost": 1e6,
    "learning.min_samples": 10**9,
    "storage.busy_timeout": 3600.0,
    "storage.flush_interval": 3600.0,
    "storage.batch_size": 1_000_000,
    "storage.max_queue": 100_000_000,
    "storage.pool_size": 1000,
    "storage.retention_days": 36600.0,
    "storage.spill_max_mb": 1e7,
}
#: Thresholds are counts, sizes, scores: any magnitude beyond this is a typo,
#: and value + step must stay finite.
THRESHOLD_LIMIT = 1e15


def _validate(cfg: Config, report: Any) -> None:
    for table in ("learning", "storage"):
        section = getattr(cfg, table)
        for f in attrs.fields(type(section)):
            v = getattr(section, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            key = f"{table}.{f.name}"
            if not math.isfinite(v):
                report(key, f"must be a finite number, got {v}")
            top = _RANGES.get(key)
            if top is not None and v > top:
                report(key, f"must be at most {top:g}, got {v:g}")
    for tname, t in cfg.thresholds.items():
        for name in ("value", "min", "max", "step"):
            v = getattr(t, name)
            if v is not None and not math.isfinite(v):
                report(f"thresholds.{tname}.{name}", f"must be a finite number, got {v}")
            elif v is not None and abs(v) > THRESHOLD_LIMIT:
                report(f"thresholds.{tname}.{name}",
                       f"must lie within +-{THRESHOLD_LIMIT:g}, got {v:g}")
    lc = cfg.learning
    if lc.min_samples < 1:
        report("learning.min_samples", f"must be at least 1, got {lc.min_samples}")
    for name in ("confidence_threshold", "practical_margin", "fdr"):
        v = getattr(lc, name)
        if not 0.0 < v < 1.0:
            report(f"learning.{name}", f"must lie strictly between 0 and 1, got {v}")
    if not 0.0 <= lc.display_floor < 1.0:
        report("learning.display_floor", f"must lie in [0, 1), got {lc.display_floor}")
    if not (lc.practical_ratio > 1.0 and math.isfinite(lc.practical_ratio)):
        report("learning.practical_ratio", f"must be a number above 1, got {lc.practical_ratio}")
    if not 0.0 <= lc.explore < 1.0:
        report("learning.explore", f"must lie in [0, 1), got {lc.explore}")
    if not (lc.failure_cost > 0 and math.isfinite(lc.failure_cost)):
        report("learning.failure_cost", f"must be a positive number, got {lc.failure_cost}")
    if not lc.analysis_interval > 0:
        report("learning.analysis_interval", "must be a positive number of seconds")
    if not lc.window_days > 0:
        report("learning.window_days", "must be a positive number of days")
    if not lc.release_attribute:
        report("learning.release_attribute", "must name a context key, such as 'release'")
    sc = cfg.storage
    if not sc.path:
        report("storage.path", "must name a file")
    for name in ("batch_size", "max_queue"):
        if getattr(sc, name) < 1:
            report(f"storage.{name}", "must be at least 1")
    for name in ("busy_timeout", "flush_interval"):
        if not getattr(sc, name) > 0:
            report(f"storage.{name}", "must be a positive number of seconds")
    if sc.url:
        if not sc.url.startswith(("postgresql://", "postgres://")):
            report("storage.url", f"must be a postgresql://user@host:5432/db URL, got {sc.url!r}")
        elif _url_password(sc.url):
            report("storage.url", "holds a password; never write it in this file: name an "
                   "environment variable in storage.password_env (or use PGPASSWORD or "
                   "~/.pgpass) and drop it from the URL")
    if sc.password_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sc.password_env):
        report("storage.password_env",
               f"must name an environment variable, got {sc.password_env!r}")
    if sc.pool_size < 1:
        report("storage.pool_size", "must be at least 1")
    if not sc.spill_max_mb >= 0:
        report("storage.spill_max_mb", "must be a size in MiB, or 0 for no spill file")
    if not (sc.retention_days >= 0 and math.isfinite(sc.retention_days)):
        report("storage.retention_days", "must be a number of days, or 0 to keep every row")
    for i, pattern in enumerate(cfg.privacy.patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            report(f"privacy.patterns[{i}]", f"is not a regular expression: {exc}")
    _validate_alerts(cfg.alerts, report)
    for tname, t in cfg.thresholds.items():
        base = f"thresholds.{tname}"
        if not t.attribute:
            report(f"{base}.attribute", "must name a context key, such as 'complexity'")
        if not t.step > 0:
            report(f"{base}.step", f"must be positive, got {t.step}")
        lo = -math.inf if t.min is None else t.min
        hi = math.inf if t.max is None else t.max
        if lo > hi:
            report(f"{base}.min", f"min ({t.min}) is above max ({t.max})")
        elif not lo <= t.value <= hi:
            report(f"{base}.value", f"{t.value} lies outside [min, max] = [{t.min}, {t.max}]")


def _validate_alerts(ac: AlertsConfig, report: Any) -> None:
    for name in ("min_interval", "backoff", "repeat_after"):
        v = getattr(ac, name)
        if not (v >= 0 and math.isfinite(v)):
            report(f"alerts.{name}", f"must be a finite number of seconds >= 0, got {v}")
    if ac.max_events < 1:
        report("alerts.max_events", f"must be at least 1, got {ac.max_events}")
    if not 0 <= ac.retries <= 20:
        report("alerts.retries", f"must lie in [0, 20], got {ac.retries}")
    if ac.min_cluster_size < 0:
        report("alerts.min_cluster_size", f"must be 0 or more, got {ac.min_cluster_size}")
    for tname, t in ac.targets.items():
        base = f"alerts.targets.{tname}"
        if bool(t.url) == bool(t.url_env):
            report(f"{base}.url_env", "set exactly one of url_env (the name of an environment "
                   "variable holding the URL) and url")
        if t.url and not re.match(r"^https?://[^/\s]+", t.url):
            report(f"{base}.url", "must be an http:// or https:// URL")
        for e in t.events:
            if e not in ALERT_EVENTS:
                report(f"{base}.events", f"{e!r} is not one of {', '.join(ALERT_EVENTS)}")
        if not (0 < t.timeout <= 300):
            report(f"{base}.timeout", f"must lie in (0, 300] seconds, got {t.timeout}")


def _url_password(url: str) -> bool:
    import urllib.parse

    try:
        return urllib.parse.urlsplit(url).password is not None
    except ValueError:
        return False


def parse_config(text: str, path: Path) -> Config:
    """Parse and validate TOML text as learnkit.toml found at ``path``.

    Raises:
        ConfigError: the text is not TOML, or does not describe a valid config.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r" \(at line (\d+), column \d+\)$", msg)
        line = int(m.group(1)) if m else None
        msg = msg[: m.start()] if m else msg
        raise ConfigError(path, f"not valid TOML: {msg}", line=line) from None

    def report(key: str, problem: str) -> None:
        raise ConfigError(path, problem, key=key, line=find_line(text, key))

    for k in document:
        hint = "" if k in _OWNED else did_you_mean(k, _OWNED)
        if hint:  # a table of another tool is kept; a misspelt one of ours is not
            header = re.compile(r"^\s*\[+\s*" + re.escape(k) + r"\s*[\].]", re.M)
            m = header.search(text)
            raise ConfigError(path, f"unknown table [{k}]{hint}; learnkit's tables: "
                              f"{', '.join(_OWNED)}", key=k,
                              line=text.count("\n", 0, m.start()) + 1 if m else None)
    owned = {k: v for k, v in document.items() if k in _OWNED}
    for k in _OWNED:
        if k in owned and not isinstance(owned[k], dict):
            report(k, f"must be a table ([{k}]), got {type(owned[k]).__name__}")
    try:
        cfg = _CONVERTER.structure(owned, Config)
    except cattrs.BaseValidationError as exc:
        first = cattrs.transform_error(exc, format_exception=_format_exception)[0]
        message, _, where = first.rpartition(" @ ")
        key = _key_of(where)
        problem = _problem(message)
        if problem.startswith("unknown key"):
            extra = re.match(r"unknown key '(.*)'", problem)
            table = key
            if extra:
                key = f"{table}.{extra.group(1)}" if table else extra.group(1)
            problem += _valid_keys(table)
        raise ConfigError(path, problem, key=key or None, line=find_line(text, key)) from None
    digest = hashlib.sha256(text.encode()).hexdigest()
    cfg = attrs.evolve(cfg, path=path, digest=digest, document=document)
    _validate(cfg, report)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read learnkit.toml from ``path``.

    Raises:
        ConfigNotFoundError: there is no such file.
        ConfigError: the file is unreadable or invalid; names file, line and key.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigNotFoundError(p) from None
    except IsADirectoryError:
        raise ConfigError(p, "is a directory; pass the path of learnkit.toml") from None
    except OSError as exc:
        raise ConfigError(p, f"cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(p, f"is not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, p.resolve())


def unstructure_owned(cfg: Config) -> dict[str, Any]:
    """The tables learnkit owns, as plain data (for writing TOML)."""
    out: dict[str, Any] = _CONVERTER.unstructure(cfg)
    for k in ("path", "digest", "document"):
        out.pop(k, None)
    for t in out.get("thresholds", {}).values():
        for k in [k for k, v in t.items() if v is None]:
            del t[k]
    return out


class LiveConfig:
    """The config in force: reloaded when the file changes, checked at most once a second.

    An edit that makes the file invalid is logged (once per distinct error)
    and the last valid config stays in force: a typo never stops tracking.
    """

    def __init__(self, config: Config, *, check_every: float = 1.0) -> None:
        self._config = config
        #: The config as the file says it, before the overlay.
        self.file_config = config
        #: Threshold values in force instead of the file's (a shared store's); see
        #: :meth:`set_overlay`.
        self.overlay: dict[str, Number] = {}
        #: Values a person changed in the file while an overlay was in force: they
        #: win, here at once and, once pushed, in the shared store.
        self.edits: dict[str, Number] = {}
        self._check_every = check_every
        self._checked = time.monotonic()
        self._stat = self._signature()
        self._last_error: str | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self._config.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @property
    def config(self) -> Config:
        """The current config (may reload it from disk)."""
        now = time.monotonic()
        if now - self._checked >= self._check_every:
            self._checked = now
            self.refresh()
        return self._config

    def refresh(self, *, force: bool = False) -> bool:
        """Reload if the file changed (or ``force``); True when the config changed."""
        sig = self._signature()
        if not force and sig == self._stat:
            return False
        self._stat = sig
        try:
            fresh = load_config(self._config.path)
        except ConfigError as exc:
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.error("learnkit: keeping the last valid config; %s", exc)
            return False
        self._last_error = None
        changed = fresh.digest != self._config.digest
        previous, self.file_config = self.file_config, fresh
        if self.overlay:
            for name, t in fresh.thresholds.items():
                was = previous.thresholds.get(name)
                if was is not None and was.value != t.value:
                    self.overlay[name] = self.edits[name] = t.value
        fresh = self._overlaid(fresh)
        if changed:
            old = {k: t.value for k, t in self._config.thresholds.items()}
            new = {k: t.value for k, t in fresh.thresholds.items()}
            if old != new:
                log.info("learnkit: thresholds now %s (were %s)", new, old)
        self._config = fresh
        return changed

    def set(self, config: Config) -> None:
        """Install a config this process has just written."""
        self.file_config = config
        self._config = self._overlaid(config)
        self._stat = self._signature()
        self._checked = time.monotonic()

    def set_overlay(self, values: dict[str, Number]) -> None:
        """Put these threshold values in force instead of the file's (names the file
        does not define are ignored); the file itself is not touched."""
        values = {**values, **self.edits}  # an edit not pushed yet stays in force
        if values == self.overlay:
            return
        old = {k: t.value for k, t in self._config.thresholds.items()}
        self.overlay = values
        self._config = self._overlaid(self.file_config)
        new = {k: t.value for k, t in self._config.thresholds.items()}
        if old != new:
            log.info("learnkit: thresholds now %s (were %s), from the shared store", new, old)

    def _overlaid(self, config: Config) -> Config:
        if not self.overlay:
            return config
        thresholds = dict(config.thresholds)
        for name, value in self.overlay.items():
            t = thresholds.get(name)
            if t is not None and value != t.value:
                kept: Number = (int(value) if isinstance(t.value, int)
                                and float(value).is_integer() else value)
                thresholds[name] = attrs.evolve(t, value=kept)
        return attrs.evolve(config, thresholds=thresholds)
