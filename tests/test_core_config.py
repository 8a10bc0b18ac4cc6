"""Config loading: files, --set overrides, unknown keys with suggestions."""

import pytest
from pydantic import Field

from slimguard.core.config import Config, apply_sets, build, resolve
from slimguard.core.errors import ConfigError


class Inner(Config):
    lr: float = 1e-3
    steps: int = Field(10, ge=1)


class Outer(Config):
    name: str = "x"
    seeds: list[int] = [0]
    train: Inner = Inner()


@pytest.mark.parametrize(
    "sets, expect",
    [
        (["train.lr=0.5"], ("train", "lr", 0.5)),
        (["train.steps=3"], ("train", "steps", 3)),
        (["seeds=[1, 2, 3]"], (None, "seeds", [1, 2, 3])),
        (["name=hello world"], (None, "name", "hello world")),
    ],
)
def test_set_overrides(sets, expect):
    cfg = resolve(Outer, sets=sets)
    group, key, value = expect
    obj = getattr(cfg, group) if group else cfg
    assert getattr(obj, key) == value


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trian": {}}, "did you mean 'train'"),
        ({"train": {"lrr": 1}}, "did you mean 'train.lr'"),
        ({"train": {"steps": 0}}, "train.steps"),
        ({"seeds": "abc"}, "seeds"),
    ],
)
def test_bad_keys_are_one_line_errors(data, message):
    with pytest.raises(ConfigError) as e:
        build(Outer, data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("suffix, text", [(".yaml", "train:\n  lr: 0.25\n"), (".toml", "[train]\nlr = 0.25\n")])
def test_file_then_set_then_explicit(tmp_path, suffix, text):
    f = tmp_path / f"c{suffix}"
    f.write_text(text)
    assert resolve(Outer, config_file=f).train.lr == 0.25
    assert resolve(Outer, config_file=f, sets=["train.lr=0.5"]).train.lr == 0.5
    assert resolve(Outer, config_file=f, sets=["name=a"], name="b").name == "b"


def test_set_never_evaluates_code():
    out = apply_sets({}, ["a=__import__('os').system('true')"])
    assert out["a"] == "__import__('os').system('true')"


@pytest.mark.parametrize("content, suffix, message", [
    (b"\xff\xfe\x00", ".yaml", "not UTF-8"), (b"[1, 2]", ".yaml", "mapping"), (b"a: [", ".yaml", "does not parse"),
    (b"a: 1", ".ini", "must end in"),
])
def test_bad_config_files(tmp_path, content, suffix, message):
    f = tmp_path / f"c{suffix}"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        resolve(Outer, config_file=f)


def test_base_sits_between_defaults_and_everything_else(tmp_path):
    """Model-scaled defaults (``base``) replace class defaults but never a file, --set or CLI value."""
    f = tmp_path / "c.yaml"
    f.write_text("name: fromfile\n")
    base = {"name": "scaled", "seeds": [7]}
    assert resolve(Outer, base=base).seeds == [7] and resolve(Outer, base=base).name == "scaled"
    assert resolve(Outer, base=base, config_file=f).name == "fromfile"
    assert resolve(Outer, base=base, sets=["seeds=[1]"]).seeds == [1]
    assert resolve(Outer, base=base, name="cli").name == "cli"
