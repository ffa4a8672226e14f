"""requirements.lock, the image's exact dependencies (issue 11), stays in step with pyproject.toml.

The Dockerfile installs every distribution from the lock with `pip install --require-hashes`;
a dependency added to pyproject.toml but not to the lock would fail the image build (`pip
check`), one whose range excludes the locked version would ship an untested version. These
checks need no network: pyproject.toml, the lock, and the metadata of what this venv has
installed. Regenerate with `make lock`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
#: the image's interpreter and platform, as `make lock` resolves for
IMAGE_ENVIRONMENT = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.13",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...]


def parse_lock(text: str) -> dict[str, Pin]:
    """`name==version \\` followed by `--hash=sha256:...` lines (pip's hash-checking format)."""
    pins: dict[str, Pin] = {}
    for entry in re.split(r"\n(?=\S)", text):
        line = entry.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s\\;]+)", line)
        assert match, f"not an exact pin: {line.splitlines()[0]}"
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})\b", entry))
        pins[canonicalize_name(match[1])] = Pin(match[1], match[2], hashes)
    return pins


def project_requirements() -> list[Requirement]:
    """What the image installs: the dependencies, the `postgres` extra, the build backend."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    texts = [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["postgres"],
        *pyproject["build-system"]["requires"],
    ]
    return [Requirement(text) for text in texts]


def applies(requirement: Requirement, extras: Iterable[str] = ("",)) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**IMAGE_ENVIRONMENT, "extra": extra}) for extra in extras
    )


@pytest.fixture(scope="module")
def pins() -> dict[str, Pin]:
    assert LOCK.is_file(), "requirements.lock is missing: run `make lock`"
    return parse_lock(LOCK.read_text("utf-8"))


def test_every_locked_distribution_is_pinned_with_hashes(pins: dict[str, Pin]) -> None:
    assert pins
    for pin in pins.values():
        assert pin.hashes, f"{pin.name}=={pin.version} has no --hash (pip --require-hashes)"
    assert "make lock" in LOCK.read_text("utf-8").split("\n\n")[0], "the header says how"


def test_every_pyproject_dependency_is_locked_within_its_range(pins: dict[str, Pin]) -> None:
    for requirement in project_requirements():
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin, f"{requirement} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{requirement} does not admit the locked {pin.name}=={pin.version}: run `make lock`"
        )


def _installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def _closure(pins: dict[str, Pin]) -> tuple[set[str], list[str]]:
    """What the project's requirements pull in on the image's platform, following each locked
    distribution's own requirements (from this venv's metadata, where it has the same
    version); the names reached, and the requirements missing from the lock."""
    # (requirement, extras asked of it); markers are evaluated before a requirement is queued
    todo = [r for r in project_requirements() if applies(r)]
    seen: set[tuple[str, frozenset[str]]] = set()
    missing: list[str] = []
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name not in pins:
            missing.append(str(requirement))
            continue
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        installed = _installed(name)
        if installed is None or installed.version != pins[name].version:
            continue  # this venv cannot tell: the image build's `pip check` will
        wanted = ("", *requirement.extras)
        todo += [sub for sub in map(Requirement, installed.requires or []) if applies(sub, wanted)]
    return {name for name, _ in seen}, missing


def test_the_lock_holds_everything_the_dependencies_pull_in(pins: dict[str, Pin]) -> None:
    reached, missing = _closure(pins)
    assert not missing, f"required but not locked (run `make lock`): {sorted(set(missing))}"
    # the build backend's own requirements are followed only where this venv has it installed
    unknown = {
        name
        for name, pin in pins.items()
        if (dist := _installed(name)) is None or dist.version != pin.version
    }
    unused = set(pins) - reached
    if unused and unknown:
        pytest.skip(
            f"this venv lacks {sorted(unknown)} at the locked versions: cannot tell "
            f"whether {sorted(unused)} are used"
        )
    assert not unused, f"locked but unused (run `make lock`): {unused}"


def test_parse_lock_reads_pip_s_hash_format() -> None:
    text = (
        "# header\nfoo-bar==1.2 \\\n    --hash=sha256:" + "a" * 64 + " \\\n"
        "    --hash=sha256:" + "b" * 64 + "\n    # via x\nbaz==3\n"
    )
    parsed = parse_lock(text)
    assert parsed["foo-bar"] == Pin("foo-bar", "1.2", ("a" * 64, "b" * 64))
    assert parsed["baz"].hashes == ()
