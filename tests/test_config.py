"""The generic dataclass <-> dict <-> YAML helper (fosp_core.util.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fosp_core.util.config import (
    ConfigError,
    dotted_overrides,
    from_dict,
    load_yaml,
    merge,
    save_yaml,
    to_dict,
)


@dataclass
class Inner:
    size: int = 3
    rate: float = 0.5
    shape: tuple[int, ...] = (64, 64, 3)
    pair: tuple[int, str] = (1, "a")


@dataclass
class Outer:
    name: str = "outer"
    flag: bool = False
    names: list[str] = field(default_factory=lambda: ["x", "y"])
    optional: float | None = None
    inner: Inner = field(default_factory=Inner)
    extras: dict[str, float] = field(default_factory=dict)


def test_to_dict_is_plain_and_round_trips() -> None:
    obj = Outer(name="n", flag=True, optional=2.0, inner=Inner(7, 0.1, (1, 2), (3, "b")))
    data = to_dict(obj)
    assert data["inner"] == {"size": 7, "rate": 0.1, "shape": [1, 2], "pair": [3, "b"]}
    assert from_dict(Outer, data) == obj  # the lists come back as tuples


def test_yaml_round_trip(tmp_path) -> None:
    obj = Outer(names=["p"], extras={"a": 1.5}, inner=Inner(shape=(8,)))
    path = tmp_path / "sub" / "outer.yaml"
    save_yaml(obj, path)
    assert load_yaml(Outer, path) == obj
    # Saving goes through a temp file in the same directory; none may be left behind.
    assert [p.name for p in path.parent.iterdir()] == ["outer.yaml"]


def test_save_replaces_existing_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    save_yaml(Outer(name="first"), path)
    save_yaml(Outer(name="second"), path)
    assert load_yaml(Outer, path).name == "second"


def test_unknown_key_names_key_and_path() -> None:
    with pytest.raises(ConfigError, match=r"'inner\.sise'"):
        from_dict(Outer, {"inner": {"sise": 4}})
    with pytest.raises(ConfigError, match=r"'nmae'"):
        from_dict(Outer, {"nmae": "x"})


def test_missing_keys_take_defaults_and_partial_yaml(tmp_path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("inner:\n  size: 9\n")
    assert load_yaml(Outer, path) == Outer(inner=Inner(size=9))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(Outer, empty) == Outer()


def test_types_are_checked_and_numbers_coerced() -> None:
    # YAML 1.1 reads 1e-4 (no dot) as a string; a float field accepts it, and ints.
    assert from_dict(Inner, {"rate": "1e-4"}).rate == pytest.approx(1e-4)
    assert isinstance(from_dict(Inner, {"rate": 1}).rate, float)
    with pytest.raises(ConfigError, match=r"'inner\.size'.*expected int"):
        from_dict(Outer, {"inner": {"size": "big"}})
    with pytest.raises(ConfigError, match=r"'flag'"):
        from_dict(Outer, {"flag": 1})
    with pytest.raises(ConfigError, match=r"'inner\.pair'"):
        from_dict(Outer, {"inner": {"pair": [1, "a", 2]}})
    assert from_dict(Outer, {"optional": None}).optional is None


def test_merge_applies_nested_overrides() -> None:
    base = Outer(name="base", inner=Inner(size=1, rate=0.2))
    merged = merge(base, {"inner": {"rate": 0.9}})
    assert merged == Outer(name="base", inner=Inner(size=1, rate=0.9))
    assert base.inner.rate == 0.2  # the original is untouched


def test_dotted_overrides_nest_and_read_values_as_yaml() -> None:
    parsed = dotted_overrides(["inner.rate=0.5", "inner.size=3", "name=x", "flag=true"])
    assert parsed == {"inner": {"rate": 0.5, "size": 3}, "name": "x", "flag": True}
    base = Outer(name="base", inner=Inner(size=1, rate=0.2))
    assert merge(base, dotted_overrides(["inner.rate=0.5", "name=x"])) == Outer(
        name="x", inner=Inner(size=1, rate=0.5))
    for bad in (["inner.rate"], ["=3"], ["inner..rate=1"], ["name=1", "name.sub=2"]):
        with pytest.raises(ConfigError):
            dotted_overrides(bad)
    with pytest.raises(ConfigError, match="inner.speed"):
        merge(base, dotted_overrides(["inner.speed=1"]))
