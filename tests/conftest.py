"""Shared pytest fixtures and the suite's rules.

- **No silent skips under CI.** With ``CI=true`` (``.ci/run`` sets it) every skip fails the test, whether a
  missing package (``importorskip``), missing weights, a missing program or missing data caused it; only
  tests marked ``gpu`` may skip (on a machine without CUDA they always do). The run ends with the count of
  skips and their reasons.
- **No user files touched.** Before any test runs, ``HOME``, the XDG base directories, the Hugging Face
  cache and every ``KIKIMIMI_*`` path point into one temporary folder (subprocesses inherit it). The
  user's own kikimimi files are listed first and compared when the session ends: a change fails the run.
- **Markers.** A test that uses the ``data_dir`` fixture (the real recordings in ../shared/data) is marked
  ``data`` automatically. Hypothesis runs without deadlines (a loaded 2-core machine is no timer) and without
  an example database in the working tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CI = os.environ.get("CI") == "true"

# Environment variables that name places the code or its libraries write to; each is pointed into the
# session's temporary folder (KIKIMIMI_* are removed, so the defaults under the temporary HOME are used).
_HOME_VARS = ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "HF_HOME")
_REMOVED_VARS = ("KIKIMIMI_CACHE", "KIKIMIMI_SPEAKERS_DB", "HF_HUB_CACHE", "TRANSFORMERS_CACHE")


@dataclass
class Isolation:
    """The temporary home the tests run in, and the user's kikimimi files as they were before."""

    root: Path
    real_env: dict[str, str | None]
    watched: list[Path] = field(default_factory=list)
    before: dict[str, tuple[int, int]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file under the watched user paths (a missing path lists nothing)."""
        out: dict[str, tuple[int, int]] = {}
        for top in self.watched:
            paths = [top] if top.is_file() else (sorted(top.rglob("*")) if top.is_dir() else [])
            for p in paths:
                try:
                    st = p.stat()
                except OSError:
                    continue
                out[str(p)] = (st.st_size, st.st_mtime_ns)
        return out

    def changes(self) -> list[str]:
        """What changed in the watched user paths since the session began: one line per path."""
        now = self.snapshot()
        lines = [f"new: {p}" for p in sorted(set(now) - set(self.before))]
        lines += [f"removed: {p}" for p in sorted(set(self.before) - set(now))]
        lines += [f"changed: {p}" for p in sorted(set(now) & set(self.before)) if now[p] != self.before[p]]
        return lines


ISOLATION: Isolation | None = None


def _user_paths(env: dict[str, str | None]) -> list[Path]:
    """Where kikimimi keeps user files by default, under the user's real environment."""
    home = Path(env["HOME"] or Path.home())

    def base(var: str, default: str) -> Path:
        return Path(env[var]) if env.get(var) else home / default

    paths = [base("XDG_CACHE_HOME", ".cache") / "kikimimi", home / ".cache" / "kikimimi",
             base("XDG_DATA_HOME", ".local/share") / "kikimimi", home / ".local" / "share" / "kikimimi",
             base("XDG_CONFIG_HOME", ".config") / "kikimimi"]
    paths += [Path(v).expanduser() for k in ("KIKIMIMI_CACHE", "KIKIMIMI_SPEAKERS_DB") if (v := env.get(k))]
    return list(dict.fromkeys(paths))


def pytest_configure(config: pytest.Config) -> None:
    global ISOLATION
    if CI:  # a module that skips at import fails under CI; the rest of the suite still runs and reports
        config.option.continue_on_collection_errors = True
    real = {k: os.environ.get(k) for k in (*_HOME_VARS, *_REMOVED_VARS)}
    root = Path(tempfile.mkdtemp(prefix="kikimimi-tests-"))
    ISOLATION = Isolation(root, real, _user_paths(real))
    ISOLATION.before = ISOLATION.snapshot()
    home = root / "home"
    targets = {"HOME": home, "XDG_CACHE_HOME": home / ".cache", "XDG_DATA_HOME": home / ".local" / "share",
               "XDG_CONFIG_HOME": home / ".config", "XDG_STATE_HOME": home / ".local" / "state",
               "HF_HOME": home / ".cache" / "huggingface"}
    for var, path in targets.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    for var in _REMOVED_VARS:
        os.environ.pop(var, None)
    try:
        from hypothesis import settings

        settings.register_profile("kikimimi", deadline=None, database=None, print_blob=True)
        settings.load_profile("kikimimi")
    except ImportError:
        pass


def pytest_unconfigure(config: pytest.Config) -> None:
    if ISOLATION is not None:
        for var, value in ISOLATION.real_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        shutil.rmtree(ISOLATION.root, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if ISOLATION is None:
        return
    changed = ISOLATION.changes()
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "the tests changed the user's own files:\n  " + "\n  ".join(changed)
        if reporter is not None:
            reporter.write_line(text, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    no_cuda = bool(gpu_items) and not _cuda_available()
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
    if no_cuda:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device on this machine"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport, where: str) -> None:
    reason = _skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, where only gpu tests may skip ({where}): {reason}\n"
                       "install what it names, or mark the test gpu if it needs a CUDA device")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail") and not item.get_closest_marker("gpu"):
        _fail_skip(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if CI and report.outcome == "skipped":
        _fail_skip(report, f"collecting {collector.nodeid}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    skipped = terminalreporter.stats.get("skipped", [])
    gpu = [r for r in skipped if "gpu" in getattr(r, "keywords", {})]
    reasons: dict[str, int] = {}
    for r in skipped:
        reason = _skip_reason(r)
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.write_sep("-", f"skipped: {len(skipped)} ({len(gpu)} gpu-only); CI={'true' if CI else 'unset'}"
                                    f"{': any other skip fails' if CI else ''}")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"  {n} x {reason}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real test media folder (../shared/data from the repo root); skips if absent (fails under CI)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real test media not found at {DATA_DIR} (see the project README: ../shared/data)")
    return DATA_DIR


@pytest.fixture(scope="session")
def isolation() -> Isolation:
    """The session's temporary home and the snapshot of the user's own kikimimi files."""
    if ISOLATION is None:
        raise RuntimeError("conftest's pytest_configure did not run")
    return ISOLATION


@pytest.fixture(scope="session", autouse=True)
def _wire_types() -> None:
    """Register the built-in message types with the wire codec, as the ZeroMQ worker does at start."""
    from kikimimi.engine.messages import register_types
    from kikimimi.engine.msgs import builtin_types

    register_types(builtin_types())
