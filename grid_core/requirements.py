"""Whether a plugin's declared requirement on grid-core admits this core, read as pip reads it.

A distribution's metadata lists its requirements as `Requires-Dist` lines (PEP 508), e.g.
`grid-core>=0.1,<0.2`. The version specifiers are PEP 440's, checked here with the standard
library alone: grid-core depends on nothing that brings `packaging`, and importing it would cost
every plugin load. An installed core counts as pip's `pip check` counts it, pre-releases included.
Environment markers other than `extra` (a requirement only for an optional extra, which never
applies) are taken as true.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_VERSION = re.compile(
    r"""^\s*v?
    (?:(?P<epoch>\d+)!)?
    (?P<release>\d+(?:\.\d+)*)
    (?:[-_.]?(?P<pre_l>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d+)?)?
    (?:-(?P<post_n1>\d+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>\d+)?)?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>\d+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_PRE = {"a": "a", "alpha": "a", "b": "b", "beta": "b", "c": "rc", "rc": "rc", "pre": "rc", "preview": "rc"}
_OPERATOR = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*(\S+?)\s*$")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", re.DOTALL)


class Version:
    """A PEP 440 version, ordered as PEP 440 orders them."""

    __slots__ = ("dev", "epoch", "local", "post", "pre", "release", "text")

    def __init__(self, text: str) -> None:
        m = _VERSION.match(text)
        if m is None:
            raise ValueError(f"not a PEP 440 version: {text!r}")
        self.text = text
        self.epoch = int(m["epoch"] or 0)
        self.release = tuple(int(p) for p in m["release"].split("."))
        self.pre = (_PRE[m["pre_l"].lower()], int(m["pre_n"] or 0)) if m["pre_l"] else None
        post = m["post_n1"] or m["post_n2"]
        self.post = int(post or 0) if (m["post_n1"] or m["post_l"]) else None
        self.dev = int(m["dev_n"] or 0) if m["dev_l"] else None
        self.local = tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"[-_.]", m["local"])) \
            if m["local"] else None

    @property
    def public(self) -> Version:
        return Version(self.text.split("+", 1)[0])

    @property
    def is_prerelease(self) -> bool:
        return self.pre is not None or self.dev is not None

    @property
    def base(self) -> tuple[int, tuple[int, ...]]:
        return self.epoch, _strip(self.release)

    def key(self) -> tuple[object, ...]:
        # PEP 440's order: 1.0.dev0 < 1.0a0 < 1.0a0.post0 < 1.0 < 1.0.post0 (packaging's _cmpkey).
        inf, neg = (2, ()), (0, ())
        pre: tuple[object, ...] = (1, self.pre) if self.pre else (neg if self.post is None and self.dev is not None
                                                                  else inf)
        post = neg if self.post is None else (1, self.post)
        dev = inf if self.dev is None else (1, self.dev)
        local = neg if self.local is None else (1, tuple((1, p, "") if isinstance(p, int) else (0, 0, p)
                                                         for p in self.local))
        return self.epoch, _strip(self.release), pre, post, dev, local

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Version) -> bool:
        return self.key() <= other.key()

    def __repr__(self) -> str:
        return f"Version({self.text!r})"


def _strip(release: tuple[int, ...]) -> tuple[int, ...]:
    end = len(release)
    while end > 1 and release[end - 1] == 0:
        end -= 1
    return release[:end]


def _one(operator: str, wanted: str, have: Version) -> bool:
    if operator == "===":
        return have.text.strip().lower() == wanted.strip().lower()
    if operator in ("==", "!=") and wanted.endswith(".*"):
        prefix = Version(wanted[:-2])
        release = have.public.release + (0,) * max(0, len(prefix.release) - len(have.release))
        same = have.epoch == prefix.epoch and release[:len(prefix.release)] == prefix.release
        return same if operator == "==" else not same
    spec = Version(wanted)
    if operator in ("==", "!="):
        # A specifier without a local label matches every local build of its version.
        same = (have if spec.local is not None else have.public) == spec
        return same if operator == "==" else not same
    if operator == "~=":
        if len(spec.release) < 2:
            raise ValueError(f"~= needs at least two release parts: ~={wanted}")
        stem = ".".join(map(str, spec.release[:-1]))
        return _one(">=", wanted, have) and _one("==", f"{spec.epoch}!{stem}.*", have)
    public = have.public
    if operator == "<=":
        return public <= spec
    if operator == ">=":
        return spec <= public
    if operator in ("<", ">"):
        # `<V` and `>V` leave out V's own family (PEP 440): `<1.0` admits no 1.0 pre-release, `>1.0`
        # no 1.0 post-release, unless V is one of them itself. As packaging 26 reads it.
        if public.base != spec.base:
            return public < spec if operator == "<" else spec < public
        if operator == "<":
            if spec.pre is not None or spec.dev is not None:
                return public < spec
            return spec.post is not None and public < spec
        if spec.dev is not None or spec.post is not None:
            return spec < public
        return spec < public and public.pre != spec.pre
    raise ValueError(f"unknown operator {operator!r}")


def admits(specifier: str, version: str) -> bool:
    """Whether `version` meets every clause of `specifier` (">=0.1,<0.2"; "" admits all)."""
    have = Version(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        m = _OPERATOR.match(clause)
        if m is None:
            raise ValueError(f"not a version specifier: {clause!r}")
        if not _one(m[1], m[2], have):
            return False
    return True


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_on(requires: Iterable[str], distribution: str) -> str | None:
    """The version specifier of the requirement on `distribution` among Requires-Dist lines ("" for
    one without versions), or None when there is none. A requirement under an `extra` marker is
    skipped: it applies only to that optional extra."""
    wanted = normalize(distribution)
    for line in requires:
        requirement, _, marker = line.partition(";")
        if "extra" in marker:
            continue
        m = _NAME.match(requirement)
        if m is None or normalize(m[1]) != wanted:
            continue
        rest = m[3].strip()
        if rest.startswith("@"):  # a direct URL: no version to compare
            return ""
        return rest.strip("()").strip()
    return None


def excluded_by(requires: Iterable[str] | None, distribution: str, version: str) -> str | None:
    """Why the requirements exclude `distribution` at `version` (e.g. "requires grid-core<0.1"),
    or None when they admit it, do not name it, or cannot be read."""
    specifier = requirement_on(requires or (), distribution)
    if not specifier:
        return None
    try:
        if admits(specifier, version):
            return None
    except ValueError as exc:
        return f"its requirement {distribution}{specifier} cannot be read: {exc}"
    return f"requires {distribution}{specifier}, this is {distribution} {version}"
