from __future__ import annotations

import pytest

from esper.registry import InvalidParameterError, Registry, UnknownNameError, build


def test_unknown_name_lists_valid_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'c'; valid widgets: a, b"):
        reg["c"]
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2


def test_duplicate_registration_is_an_error() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)


def test_build_names_unknown_parameter_and_allowed_ones() -> None:
    def factory(size: int = 1, colour: str = "red") -> tuple[int, str]:
        return size, colour

    assert build(factory, {"size": 3}, "widget 'w'") == (3, "red")
    with pytest.raises(InvalidParameterError, match=r"no parameter 'shape'; allowed: size, colour"):
        build(factory, {"shape": 1}, "widget 'w'")


def test_build_fixed_arguments_are_not_user_parameters() -> None:
    def factory(shape: tuple[int, ...], width: int = 2) -> int:
        return len(shape) * width

    assert build(factory, {"width": 3}, "host", fixed={"shape": (1, 2)}) == 6
    with pytest.raises(InvalidParameterError, match="allowed: width"):
        build(factory, {"shape": (1,)}, "host", fixed={"shape": (1, 2)})
