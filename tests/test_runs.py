"""The run-folder contract (core/runs.py): plain names, refuse / resume / overwrite, lock,
status, stray temp files and file modes; and the CLI's one-line errors for each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimguard.core.errors import SlimguardError
from slimguard.core.runs import (FILE_MODE, Run, RunExistsError, RunLockedError, atomic_write_json, check_run_name,
                                 diff_config, is_locked, remove_stale_temps, safe_run_name)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,ok", [
    ("attack-punc_rt.0", True), ("a", True), ("..", False), (".", False), ("../x", False), ("/abs/x", False),
    ("a/b", False), ("", False), ("with space", False), ("ünï", False), ("a\\b", False),
])
def test_run_names_are_plain(name, ok, tmp_path):
    if ok:
        assert check_run_name(name) == name
        assert Run.create(name, root=tmp_path).path == tmp_path / name
    else:
        with pytest.raises(SlimguardError, match="not a plain name"):
            Run.create(name, root=tmp_path)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("parts,want", [
    (("attack", "punc", "my data", "r0.1"), "attack-punc-my-data-r0.1"),
    (("promptattack", "org/model", "s0"), "promptattack-org-model-s0"),
    (("..",), "run"),
])
def test_default_names_are_made_safe(parts, want):
    assert safe_run_name(*parts) == want
    check_run_name(safe_run_name(*parts))


def _started(tmp_path, name="r", config=None):
    with Run.create(name, root=tmp_path, command="test", config=config or {"a": 1, "b": {"c": 2}}) as r:
        (r.path / "metrics.json").write_text("{}")
    return r


def test_rerun_refuses_and_names_both_flags(tmp_path):
    r = _started(tmp_path)
    before = {p: p.read_bytes() for p in r.path.rglob("*") if p.is_file()}
    with pytest.raises(RunExistsError, match="--resume.*--overwrite"):
        Run.create("r", root=tmp_path, config={"a": 2})
    assert {p: p.read_bytes() for p in r.path.rglob("*") if p.is_file()} == before


def test_overwrite_replaces_the_run(tmp_path):
    r = _started(tmp_path)
    (r.path / "model").mkdir()
    (r.path / "model" / "w.bin").write_bytes(b"x")
    with Run.create("r", root=tmp_path, config={"a": 2}, overwrite=True) as r2:
        assert not (r2.path / "model").exists() and not (r2.path / "metrics.json").exists()
        assert json.loads((r2.path / "config.json").read_text()) == {"a": 2}


@pytest.mark.parametrize("new,fields", [
    ({"a": 2, "b": {"c": 2}}, ["a"]),
    ({"a": 1, "b": {"c": 3}}, ["b.c"]),
    ({"a": 1, "b": {"c": 2}, "d": 0}, ["d"]),
])
def test_resume_checks_the_config_before_writing(tmp_path, new, fields):
    r = _started(tmp_path)
    before = {p: p.read_bytes() for p in r.path.rglob("*") if p.is_file()}
    with pytest.raises(SlimguardError, match="different config") as e:
        Run.create("r", root=tmp_path, config=new, resume=True)
    for f in fields:
        assert f in str(e.value)
    assert {p: p.read_bytes() for p in r.path.rglob("*") if p.is_file()} == before
    assert diff_config({"a": 1, "b": {"c": 2}}, new) == fields


def test_resume_keeps_started_and_records_resumes(tmp_path):
    r = _started(tmp_path)
    started = r.info()["started"]
    with Run.create("r", root=tmp_path, config={"a": 1, "b": {"c": 2}}, resume=True) as r2:
        assert r2.resumed and r2.info()["status"] == "running"
    info = r2.info()
    assert info["started"] == started and len(info["resumed"]) == 1 and info["status"] == "done"


def test_resume_of_a_missing_run_and_both_flags_are_errors(tmp_path):
    with pytest.raises(SlimguardError, match="does not exist yet"):
        Run.create("nope", root=tmp_path, resume=True)
    with pytest.raises(SlimguardError, match="exclude each other"):
        Run.create("nope", root=tmp_path, resume=True, overwrite=True)


def test_a_second_writer_fails_at_once(tmp_path):
    r = Run.create("r", root=tmp_path, config={"a": 1})
    assert is_locked(r.path)
    with pytest.raises(RunLockedError, match="another process"):
        Run.create("r", root=tmp_path, config={"a": 1}, resume=True)
    # another process too
    code = ("import sys; from slimguard.core.runs import Run\n"
            f"Run.create('r', root={str(tmp_path)!r}, config={{'a': 1}}, resume=True)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode != 0 and "being written by another process" in p.stderr
    r.finish()
    assert not is_locked(r.path)
    Run.create("r", root=tmp_path, config={"a": 1}, resume=True).finish()


@pytest.mark.parametrize("exc,status,error", [
    (None, "done", None),
    (SlimguardError("bad thing happened\nsecond line"), "failed", "bad thing happened"),
    (ValueError("boom"), "failed", "ValueError: boom"),
    (KeyboardInterrupt(), "interrupted", "interrupted by the user (SIGINT)"),
])
def test_status_records_how_the_run_ended(tmp_path, exc, status, error):
    with pytest.raises(type(exc)) if exc else _nothing():
        with Run.create("r", root=tmp_path, config={"a": 1}) as r:
            (r.path / "partial.bin").write_bytes(b"1")  # something was made: the failed run is kept
            if exc:
                raise exc
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["status"] == status and info.get("error") == error and "finished" in info
    assert not is_locked(tmp_path / "r")


def test_bad_input_before_anything_was_made_leaves_no_folder(tmp_path):
    with pytest.raises(SlimguardError):
        with Run.create("r", root=tmp_path, config={"a": 1}):
            raise SlimguardError("--model: no such model")
    assert not (tmp_path / "r").exists()


def test_stray_temp_files_are_removed_at_the_next_start(tmp_path):
    r = _started(tmp_path)
    stray = [r.path / ".checkpoint.pt.ab12_xyz", r.path / "sub" / ".metrics.json.q1w2e3r4.tmp"]
    for p in stray:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    keep = r.path / ".hidden_user_file"
    keep.write_text("x")
    assert sorted(remove_stale_temps(r.path)) == sorted(stray) and keep.exists()
    for p in stray:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    Run.create("r", root=tmp_path, config={"a": 1, "b": {"c": 2}}, resume=True).finish()
    assert not any(p.exists() for p in stray) and keep.exists()


def test_one_file_mode_for_run_files(tmp_path):
    with Run.create("r", root=tmp_path, config={"a": 1}) as r:
        r.log.info("hello")
        atomic_write_json(r.artefact("sub/x.json"), {"x": 1})
    modes = {p.name: p.stat().st_mode & 0o777 for p in r.path.rglob("*") if p.is_file()}
    assert set(modes.values()) == {FILE_MODE}, modes


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _cli(*args, env_runs: Path, stdin: str | None = None):
    env = {**os.environ, "SLIMGUARD_RUNS": str(env_runs), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "slimguard.cli.main", *args], capture_output=True, text=True,
                          env=env, input=stdin, cwd=env_runs.parent, timeout=300)


@pytest.mark.parametrize("args", [
    ["backdoor", "poison", "--attack", "badnets", "--run", "../escape"],
    ["backdoor", "poison", "--attack", "badnets", "--run", "/tmp/abs"],
    ["backdoor", "defend", "--defence", "onion", "--run", "nowhere", "--out", "a/b"],
])
def test_cli_refuses_unsafe_run_names(tmp_path, args):
    runs = tmp_path / "runs"
    p = _cli(*args, env_runs=runs)
    assert p.returncode == 2, p.stderr
    assert "not a plain name" in p.stderr and "Traceback" not in p.stderr
    assert [x.name for x in tmp_path.iterdir()] in ([], ["runs"]) and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("how,status", [("done", "done"), ("fail", "failed"), ("kill", "killed")])
def test_report_shows_how_the_run_ended(tmp_path, how, status):
    from slimguard.report.html import render_run

    r = Run.create("r", root=tmp_path, config={"a": 1})
    r.save_metrics({"x": 1.0})
    if how == "done":
        r.finish()
    elif how == "fail":
        r.finish("failed", "--model: no such model")
    else:  # a SIGKILL: status stays 'running' and the lock dies with the process
        r.release()
    page = render_run(r.path).read_text()
    assert f"Run status: {status}" in page
    if how == "fail":
        assert "no such model" in page
