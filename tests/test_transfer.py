"""`slimguard assets pack / unpack`: an asset cut into parts travels and installs byte-identical."""

import json
from pathlib import Path

import pytest

from slimguard.core import assets as A
from slimguard.core.errors import AssetError
from slimguard.core.transfer import pack, unpack


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """A cached asset with a 3 MB 'source' file and a 'derived' file its rebuild step makes from it."""
    import random

    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path / "home"))

    def rebuild(root: Path) -> None:
        src = (root / "gguf" / "w.bin").read_bytes()
        (root / "model").mkdir(exist_ok=True)
        (root / "model" / "derived.bin").write_bytes(src[::-1])

    asset = A.Asset("fake-lm", "causal-lm", "test", (), (), 3.0, rebuilt=("model/*",), rebuild=rebuild)
    monkeypatch.setitem(A.REGISTRY, "fake-lm", asset)
    root = asset.path()
    (root / "gguf").mkdir(parents=True)
    rng = random.Random(0)
    (root / "gguf" / "w.bin").write_bytes(bytes(rng.getrandbits(8) for _ in range(3 << 20)))
    (root / "notes.txt").write_text("hello")
    rebuild(root)
    A.write_manifest(root, asset)
    return asset


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("part_mb", [1, 2, 60])
def test_pack_then_unpack_elsewhere_gives_the_same_files(fake_asset, tmp_path, monkeypatch, part_mb):
    before = _snapshot(fake_asset.path())
    idx = json.loads(pack("fake-lm", tmp_path / "out", part_bytes=part_mb << 20).read_text())
    assert len(idx["parts"]) == -(-sum(p["bytes"] for p in idx["parts"]) // (part_mb << 20))
    assert all(p["bytes"] <= part_mb << 20 for p in idx["parts"])
    assert idx["files"] == ["gguf/w.bin", "notes.txt"]  # the derived file stays behind
    # parts that arrived in two transfers, on a machine with an empty cache
    a, b = tmp_path / "t1", tmp_path / "t2"
    a.mkdir(), b.mkdir()
    for i, p in enumerate(sorted((tmp_path / "out").iterdir())):
        p.rename((a if i % 2 else b) / p.name)
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path / "other"))
    (path,) = unpack([a, b])
    assert _snapshot(path) == before
    assert A.verify("fake-lm") == []


@pytest.mark.parametrize("damage, match", [("flip", "does not match its size/sha256"), ("drop", "is in none of"),
                                           ("index", "format")])
def test_a_broken_transfer_is_refused_and_installs_nothing(fake_asset, tmp_path, monkeypatch, damage, match):
    out = tmp_path / "out"
    idx_path = pack("fake-lm", out, part_bytes=1 << 20)
    part = out / "fake-lm.part001"
    if damage == "flip":
        data = bytearray(part.read_bytes())
        data[100] ^= 1
        part.write_bytes(bytes(data))
    elif damage == "drop":
        part.unlink()
    else:
        idx_path.write_text(json.dumps({**json.loads(idx_path.read_text()), "format": "other/9"}))
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path / "other"))
    with pytest.raises(AssetError, match=match):
        unpack([out])
    assert not fake_asset.is_cached()
    assert not [p for p in (tmp_path / "other").rglob("*") if p.is_file()]  # no half-written asset


def test_pack_refuses_an_uncached_asset_and_tiny_parts(fake_asset, tmp_path):
    with pytest.raises(AssetError, match="not cached"):
        pack("rotten-tomatoes", tmp_path)  # SLIMGUARD_HOME is a fresh folder here
    with pytest.raises(AssetError, match="below 1 MiB"):
        pack("fake-lm", tmp_path, part_bytes=1000)


def test_cli_pack_and_unpack(fake_asset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from slimguard.cli.assets import app

    r = CliRunner().invoke(app, ["pack", "fake-lm", "--out", str(tmp_path / "x"), "--part-mb", "1"])
    assert r.exit_code == 0 and "4 part(s)" in r.output  # 3 MiB of data + tar headers, 1 MiB parts
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path / "other"))
    r = CliRunner().invoke(app, ["unpack", str(tmp_path / "x")])
    assert r.exit_code == 0 and A.verify("fake-lm") == []
