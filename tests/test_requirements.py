"""The standard-library check of a plugin's requirement on grid-core agrees with `packaging`
(what pip uses), which the tests have and grid-core does not depend on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version as PVersion

from grid_core.requirements import Version, admits, excluded_by, requirement_on

parts = st.lists(st.integers(0, 3), min_size=1, max_size=3).map(lambda p: ".".join(map(str, p)))
suffix = st.sampled_from(["", "a1", "b2", "rc1", ".post1", ".dev0", "a1.dev2", ".post2.dev1", "+local.7", "+3"])
versions = st.builds(lambda epoch, release, tail: f"{epoch}{release}{tail}", st.sampled_from(["", "", "1!"]),
                     parts, suffix)
public = st.builds(lambda release, tail: f"{release}{tail}", parts, st.sampled_from(["", "a1", "rc1", ".post1",
                                                                                      ".dev0"]))
clauses = st.one_of(
    st.builds(lambda op, v: f"{op}{v}", st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), public),
    st.builds(lambda op, v: f"{op}{v}.*", st.sampled_from(["==", "!="]), parts),
    st.builds(lambda v: f"~={v}", st.lists(st.integers(0, 3), min_size=2, max_size=3)
              .map(lambda p: ".".join(map(str, p)))),
)
specifiers = st.lists(clauses, min_size=1, max_size=3).map(",".join)


@settings(max_examples=600, deadline=None)
@given(versions, versions)
def test_versions_order_as_pep_440_orders_them(a: str, b: str) -> None:
    assert (Version(a) < Version(b)) == (PVersion(a) < PVersion(b))
    assert (Version(a) == Version(b)) == (PVersion(a) == PVersion(b))


@settings(max_examples=1500, deadline=None)
@given(specifiers, versions)
def test_a_specifier_admits_what_pip_admits(specifier: str, version: str) -> None:
    assert admits(specifier, version) == SpecifierSet(specifier).contains(version, prereleases=True)


@pytest.mark.parametrize(("lines", "found"), [
    (["grid-core>=0.1"], ">=0.1"),
    (["Grid_Core (>=0.1,<0.2)"], ">=0.1,<0.2"),
    (["grid-core[extra]>=1; python_version >= '3.8'"], ">=1"),
    (["grid-core<0.1; extra == 'dev'"], None),
    (["grid-core"], ""),
    (["grid-core @ file:///src/grid"], ""),
    (["grid-corex>=1", "click"], None),
])
def test_the_requirement_on_grid_core_is_read_from_requires_dist(lines: list[str], found: str | None) -> None:
    assert requirement_on(lines, "grid-core") == found


def test_why_a_requirement_excludes_a_version() -> None:
    assert excluded_by(["grid-core<0.1"], "grid-core", "0.1.0") == "requires grid-core<0.1, this is grid-core 0.1.0"
    assert excluded_by(["grid-core>=0.1,<1"], "grid-core", "0.1.0") is None
    assert excluded_by(None, "grid-core", "0.1.0") is None
    assert "cannot be read" in str(excluded_by(["grid-core>=one"], "grid-core", "0.1.0"))
