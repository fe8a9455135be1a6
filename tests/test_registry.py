import pytest

from locallearn.errors import UsageError
from locallearn.registry import Registry


def make() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("alpha", description="first", aliases=("a",), options=("width",), paper="P")
    def alpha() -> str:
        return "alpha"

    @reg.register("beta", description="second")
    def beta() -> str:
        return "beta"

    return reg


def test_lookup_by_name_and_alias():
    reg = make()
    assert reg.get("alpha").build() == "alpha"
    assert reg.get("a").name == "alpha"
    assert reg.canonical("a") == "alpha"
    assert reg.names() == ["alpha", "beta"]
    assert reg.get("alpha").meta == {"paper": "P"}
    assert reg.get("alpha").options == frozenset({"width"})


def test_registering_twice_is_an_error():
    reg = make()
    with pytest.raises(ValueError, match="widget 'beta' is registered twice"):
        reg.register("beta", description="again")(lambda: None)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a", description="alias clash")(lambda: None)


def test_unknown_name_names_close_matches_and_all_choices():
    with pytest.raises(UsageError) as err:
        make().get("alpah")
    message = str(err.value)
    assert "unknown widget 'alpah'" in message
    assert "did you mean 'alpha'" in message
    assert "valid choices: alpha, beta" in message
    assert "locallearn list widgets" in message
