"""The suite's own rules (tests/conftest.py): no silent skips under CI, no user files touched, markers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
from conftest import DATA_DIR, Isolation

ROOT = Path(__file__).resolve().parents[1]
INNER = '''
import pytest

mod = pytest.importorskip("no_such_module_kikimimi")   # replaced below for the runtime cases
'''
RUNTIME = '''
import pytest

def test_missing_weights():
    pytest.skip("weights not installed")

@pytest.mark.gpu
def test_needs_cuda():
    pass

def test_fine():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_known_gap():
    assert False
'''


def inner_run(tmp_path: Path, ci: bool, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """pytest on ``files`` in a folder holding our conftest and our pytest settings."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    markers = "\n".join(f"    {m}" for m in ini["markers"])
    (tmp_path / "pytest.ini").write_text(f"[pytest]\naddopts = {ini['addopts']}\nmarkers =\n{markers}\n")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def outcome_counts(text: str) -> dict[str, int]:
    last = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)][-1]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|xfailed|errors?)", last)}


def test_under_ci_every_skip_fails_except_gpu_tests(tmp_path: Path) -> None:
    run = inner_run(tmp_path, True, {"test_rt.py": RUNTIME, "test_mod.py": INNER})
    counts = outcome_counts(run.stdout)
    # the runtime skip fails; the module that skipped at import is a collection error (the rest still runs)
    assert counts.get("failed") == 1 and counts.get("passed") == 1 and counts.get("xfailed") == 1, run.stdout
    assert counts.get("skipped") == 1 and counts.get("error", counts.get("errors")) == 1, run.stdout
    assert "skipped under CI=true, where only gpu tests may skip" in run.stdout
    assert "weights not installed" in run.stdout and "no_such_module_kikimimi" in run.stdout
    assert "skipped: 1 (1 gpu-only); CI=true: any other skip fails" in run.stdout
    assert run.returncode != 0


def test_without_ci_skips_are_counted_with_their_reasons(tmp_path: Path) -> None:
    run = inner_run(tmp_path, False, {"test_rt.py": RUNTIME})
    counts = outcome_counts(run.stdout)
    assert counts.get("skipped") == 2 and counts.get("passed") == 1 and "failed" not in counts, run.stdout
    assert "skipped: 2 (1 gpu-only); CI=unset" in run.stdout
    assert "1 x weights not installed" in run.stdout
    assert run.returncode == 0


def test_a_misspelt_marker_is_an_error(tmp_path: Path) -> None:
    run = inner_run(tmp_path, False, {"test_m.py": "import pytest\n\n@pytest.mark.slwo\ndef test_x():\n    pass\n"})
    assert run.returncode != 0 and "'slwo' not found in `markers`" in run.stdout + run.stderr


def test_the_session_runs_in_a_temporary_home(isolation: Isolation) -> None:
    from kikimimi.models.asr.resolve import cache_dir
    from kikimimi.models.avsr.data import default_cache_dir
    from kikimimi.models.speaker.db import default_db_path

    root = isolation.root.resolve()
    for path in (Path.home(), cache_dir(), default_db_path(), default_cache_dir(),
                 *(Path(os.environ[v]) for v in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "HF_HOME"))):
        assert path.resolve().is_relative_to(root), path
    for var in ("KIKIMIMI_CACHE", "KIKIMIMI_SPEAKERS_DB"):
        assert var not in os.environ


def test_user_files_written_by_the_commands_land_in_the_temporary_home(isolation: Isolation) -> None:
    """A subprocess writing to the default user paths (as `kikimimi speakers` and the model cache do) leaves
    the user's real files as they were; the same check runs over the whole session when it ends."""
    code = ("from kikimimi.models.speaker.db import default_db_path; from kikimimi.models.asr.resolve import "
            "cache_dir; p = default_db_path(); p.parent.mkdir(parents=True, exist_ok=True); p.write_text('x'); "
            "c = cache_dir(); c.mkdir(parents=True, exist_ok=True); (c / 'probe').write_text('x'); print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert Path(out.stdout.strip()).resolve().is_relative_to(isolation.root.resolve())
    assert isolation.changes() == []


def test_the_user_file_check_sees_a_change(tmp_path: Path) -> None:
    watched = tmp_path / "real-home" / ".cache" / "kikimimi"
    watched.mkdir(parents=True)
    (watched / "model.bin").write_text("a")
    iso = Isolation(tmp_path, {}, [watched])
    iso.before = iso.snapshot()
    assert iso.changes() == []
    (watched / "model.bin").write_text("bb")
    (watched / "new").write_text("c")
    assert iso.changes() == [f"new: {watched / 'new'}", f"changed: {watched / 'model.bin'}"]


def test_data_marker_follows_the_data_fixture() -> None:
    """A test using data_dir is marked data (so -m "not data" leaves it out), one without it is not."""
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", "not data", "tests/test_webrtc_vad.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert "test_bad_param_names_value_and_allowed" in run.stdout, run.stdout + run.stderr
    assert "test_min_speech_discards_short_segments" not in run.stdout


def test_no_test_module_names_the_data_folder_itself() -> None:
    """The data_dir fixture is the one way in, so the data marker cannot be missed."""
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in ("conftest.py", "golden.py", Path(__file__).name):
            continue
        text = path.read_text(encoding="utf-8")
        assert '"shared"' not in text and str(DATA_DIR) not in text, path
