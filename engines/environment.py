"""Engine environments: a heavy engine's own pinned Python environment, made from the package registries.

A heavy engine's upstream code pins versions that clash with the studio's (MOSS-TTSD v1.0:
transformers 5.0.0 and a torch/torchaudio pair; the studio: transformers 5.23 and torch 2.13, for
which the registries have no torchaudio). So such an engine names an environment
(`EngineInfo.environment`), whose pins are a pip requirements file in the project,
`engines/envs/<name>.txt`, and its model runs in a worker (`engines/worker.py`) started with that
environment's interpreter. The studio's own code reaches the worker through PYTHONPATH, so an
environment needs only what the engine and the worker protocol import (numpy and psutil).

`EngineEnvironment(name)` is one such environment: a venv at `<root>/<name>/` (root:
`STUDIO_ENGINE_ENVS`, default `envs/` beside the code). `state()` says whether it is ready (made
from the current pins), stale (the pins changed since), missing, or not needed (the studio's own
environment already satisfies every pin, so the worker runs on the studio's interpreter). `install()`
makes or updates it with pip, torch first when pinned (a pinned torch decides which build pip takes),
under the one process supervisor (streamed lines, cancel stops the whole pip tree), then checks that
the engine's imports load in it; only then is the stamp written that makes it ready. An install that
failed or was cancelled is resumed by the next one (pip keeps what it already installed).

Disk: heavy engines pin CUDA builds of torch (5-7 GB each with their nvidia packages), and two pairs
pin the same one (MegaTTS3 and GPT-SoVITS torch 2.6.0; both MOSS-TTSD versions torch 2.9.1). So pip
keeps no cache of the wheels it installs, and before pip runs, an install hard-links into the new venv
every package another ready environment has at exactly the pinned version, with what that package
needs there (`link_packages`): pip then finds torch and its nvidia packages already satisfied, and the
second environment of a pair costs megabytes, not gigabytes, and no download. pip never writes into
an installed file (it replaces or removes it), so a link shared by two environments stays right when
either changes. An install that runs out of disk is removed, so that the studio's own files have room.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from engines.supervisor import SupervisedProcess

ROOT = Path(__file__).resolve().parent.parent
SPECS = Path(__file__).resolve().parent / "envs"  # engines/envs/<name>.txt: the pins
STAMP = ".studio-env.sha256"  # in the venv: the fingerprint of the pins it was made from
_PIP_NOISE = re.compile(r"^(WARNING: Location|\[notice\])")


def environments_root() -> Path:
    """Where engine environments live: `STUDIO_ENGINE_ENVS`, default `envs/` beside the code."""
    return Path(os.environ.get("STUDIO_ENGINE_ENVS") or ROOT / "envs").resolve()


class EnvironmentState(StrEnum):
    READY = "ready"  # its own venv, made from the current pins
    SHARED = "shared"  # the studio's environment satisfies every pin: no venv needed
    STALE = "stale"  # a venv made from other pins: install again to update it
    MISSING = "missing"


class InstallError(RuntimeError):
    """An environment could not be made; the message says which step failed and how."""


class InstallCancelled(InstallError):
    """The install was cancelled; what pip finished is kept for the next install."""


class InstallBusy(InstallError):
    """Another process is installing this environment now; its state is known when that one ends."""


@dataclass(frozen=True)
class InstallStep:
    title: str
    argv: list[str]
    share: float  # of the whole install's progress
    required: bool = True  # a step that only saves disk may fail: the install goes on without it


class EngineEnvironment:
    """One engine environment: its pins, its venv, whether it is ready, and how to make it."""

    def __init__(
        self,
        name: str,
        root: Path | None = None,
        imports: Sequence[str] = (),
        spec: Path | None = None,
        engine: str | None = None,
    ) -> None:
        self.name = name
        self.engine = engine or name  # what `python -m studio.engines install` is given for it
        self.spec = spec or SPECS / f"{name}.txt"
        if not self.spec.is_file():
            raise KeyError(f"no environment '{name}': {self.spec} does not exist")
        # Packages whose sdist builds only against the environment's own setuptools, installed last.
        self.unisolated_spec = self.spec.with_suffix(".no-build-isolation.txt")
        self.folder = (root or environments_root()) / name
        self.imports = tuple(imports)  # modules the engine imports: checked in the new environment

    # ---- what it is ----------------------------------------------------------------------------
    @property
    def pins(self) -> tuple[str, ...]:
        """The requirement lines of the specs (comments and blank lines left out)."""
        return _requirement_lines(self.spec) + _requirement_lines(self.unisolated_spec)

    @property
    def fingerprint(self) -> str:
        """The pins and the Python version they are installed for: a change means installing again."""
        text = f"{sys.version_info.major}.{sys.version_info.minor}\n" + "\n".join(self.pins)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def own_python(self) -> Path:
        return self.folder / "bin" / "python"

    def state(self) -> EnvironmentState:
        if (self.folder / STAMP).is_file() and self.own_python.exists():
            stamp = (self.folder / STAMP).read_text(encoding="utf-8").strip()
            return EnvironmentState.READY if stamp == self.fingerprint else EnvironmentState.STALE
        if studio_satisfies(self.pins):
            return EnvironmentState.SHARED
        return EnvironmentState.STALE if self.own_python.exists() else EnvironmentState.MISSING

    def python(self) -> str | None:
        """The interpreter an engine worker runs on; None while the environment is not ready."""
        state = self.state()
        if state is EnvironmentState.READY:
            return str(self.own_python)
        return sys.executable if state is EnvironmentState.SHARED else None

    def problem(self) -> str | None:
        """What is missing, in words for the Engines tab; None when the worker can start."""
        state = self.state()
        if state in (EnvironmentState.READY, EnvironmentState.SHARED):
            return None
        how = (
            f"python -m studio.engines install {self.engine}, or Install in the Engines tab "
            f"(a venv at {self.folder}, from the pins in engines/envs/{self.spec.name})"
        )
        if state is EnvironmentState.STALE:
            return f"environment '{self.name}' was made from other pins or did not finish: install it again ({how})"
        return f"environment '{self.name}' is not installed: {how}"

    # ---- making it -----------------------------------------------------------------------------
    def steps(self) -> list[InstallStep]:
        """The commands an install runs, in order."""
        # --no-compile: the worker compiles the modules it imports, once; pip would compile all 10,000+.
        pip = [
            *(str(self.own_python), "-m", "pip", "install"),
            *("--disable-pip-version-check", "--no-cache-dir", "--no-compile"),
        ]
        steps = []
        if not self.own_python.exists():
            steps.append(
                InstallStep("creating the venv", [sys.executable, "-m", "venv", str(self.folder)], 0.03)
            )
        others = [str(folder) for folder in self.ready_siblings()]
        if others:
            steps.append(
                InstallStep(
                    "linking the pinned packages the other environments have",
                    [
                        sys.executable,
                        "-m",
                        "engines.environment",
                        "link",
                        str(self.spec),
                        str(self.folder),
                        *others,
                    ],
                    0.02,
                    required=False,
                )
            )
        torch = [pin for pin in self.pins if _name(pin) == "torch"]
        if torch:  # first and alone: a pinned torch decides which build pip takes (the notes: CPU vs CUDA)
            steps.append(InstallStep(f"installing {torch[0]}", pip + torch, 0.55))
        steps.append(InstallStep("installing the pinned packages", [*pip, "-r", str(self.spec)], 0.35))
        if self.unisolated_spec.is_file():  # their dependencies are pinned in the main spec
            steps.append(
                InstallStep(
                    "building packages without build isolation",
                    [*pip, "--no-build-isolation", "--no-deps", "-r", str(self.unisolated_spec)],
                    0.05,
                )
            )
        check = "import engines.worker" + "".join(f"; import {module}" for module in self.imports)
        steps.append(InstallStep("checking the engine's imports", [str(self.own_python), "-c", check], 0.07))
        return steps

    def install(
        self,
        on_line: Callable[[str], None] = print,
        on_progress: Callable[[float, str], None] = lambda percent, step: None,
        cancelled: Callable[[], bool] | threading.Event | None = None,
    ) -> EnvironmentState:
        """Make or update the venv (see the module doc); the state it ends in.

        `on_line` gets pip's output, `on_progress(percent, step)` the progress. InstallError says
        which step failed (its last lines); InstallCancelled when `cancelled` turned true.
        """
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            (self.folder / STAMP).unlink(missing_ok=True)
            done = 0.0
            steps = self.steps()
            total = sum(step.share for step in steps)
            for number, step in enumerate(steps, start=1):
                title = f"{number}/{len(steps)} {step.title}"
                on_progress(100 * done / total, title)
                on_line(f"$ {' '.join(step.argv)}")
                outcome = SupervisedProcess(
                    step.argv,
                    env={**os.environ, "PYTHONPATH": str(ROOT), "PIP_NO_INPUT": "1"},
                    on_line=_pip_progress(on_line, on_progress, title, done / total, step.share / total),
                    cancelled=cancelled,
                    tail_filter=lambda line: not _PIP_NOISE.match(line),
                    grace_s=5.0,
                ).run()
                if outcome.cancelled:
                    raise InstallCancelled(
                        f"installing environment '{self.name}' was cancelled at: {step.title}"
                    )
                if outcome.returncode != 0 and not step.required:
                    on_line(f"(skipped: {step.title} exited with status {outcome.returncode})")
                elif outcome.returncode != 0:
                    tail = " | ".join(outcome.tail[-6:])
                    if "No space left on device" in tail:
                        shutil.rmtree(self.folder, ignore_errors=True)
                        free_gb = shutil.disk_usage(self.folder.parent).free / 1e9
                        raise InstallError(
                            f"installing environment '{self.name}' ran out of disk at {step.title}: "
                            f"{free_gb:.1f} GB is free in {self.folder.parent} and an engine environment "
                            "takes up to 7 GB (CUDA torch). The unfinished environment was removed; free "
                            "some disk or set STUDIO_ENGINE_ENVS to a bigger disk, then install again"
                        )
                    raise InstallError(
                        f"installing environment '{self.name}' failed at {step.title} "
                        f"(exit status {outcome.returncode}): {tail}"
                    )
                done += step.share
            (self.folder / STAMP).write_text(self.fingerprint + "\n", encoding="utf-8")
            on_progress(100.0, "installed")
        return self.state()

    def ready_siblings(self) -> list[Path]:
        """The other environments under the same root that finished installing."""
        root = self.folder.parent
        if not root.is_dir():
            return []
        return sorted(
            folder for folder in root.iterdir() if folder != self.folder and (folder / STAMP).is_file()
        )

    def remove(self) -> None:
        with self._lock():
            shutil.rmtree(self.folder, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One install of an environment at a time (the CLI and the studio may both try)."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.folder.parent / f".{self.name}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InstallBusy(
                    f"environment '{self.name}' is being installed already; wait for it"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _requirement_lines(spec: Path) -> tuple[str, ...]:
    if not spec.is_file():
        return ()
    lines = (line.split("#", 1)[0].strip() for line in spec.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line)


def _name(pin: str) -> str:
    from packaging.requirements import InvalidRequirement, Requirement  # not needed in a worker

    with contextlib.suppress(InvalidRequirement):
        return Requirement(pin).name.lower().replace("_", "-")
    return ""


@functools.cache
def studio_satisfies(pins: tuple[str, ...]) -> bool:
    """Whether this (the studio's) environment already has every pinned package at a pinned version
    (asked on every status of an engine whose environment is missing; what is installed here does not
    change while the studio runs)."""
    from packaging.requirements import InvalidRequirement, Requirement  # not needed in a worker

    for pin in pins:
        try:
            wanted = Requirement(pin)
            have = metadata.version(wanted.name)
        except (InvalidRequirement, metadata.PackageNotFoundError):
            return False
        if not wanted.specifier.contains(have, prereleases=True):
            return False
    return True


def _site_packages(venv: Path) -> Path | None:
    found = sorted(venv.glob("lib/python*/site-packages"))
    return found[0] if found else None


def link_packages(spec: Path, venv: Path, others: Sequence[Path]) -> list[str]:
    """Hard-link into `venv` each package that `spec` pins exactly (`name==version`) and one of the
    `others` (ready venvs of the same Python) has at that version, with every package it needs there,
    except what `spec` pins otherwise and what `venv` has already; the names of those linked.

    Scripts in bin/ are copied with their first line pointing at this venv's interpreter. pip then
    sees the packages installed (their dist-info comes along) and leaves them be, or replaces one if
    its resolver wants another version: replacing removes the link, never writes through it.
    """
    from packaging.requirements import InvalidRequirement, Requirement  # not needed in a worker
    from packaging.utils import canonicalize_name

    target = _site_packages(venv)
    if target is None:
        return []
    wanted: dict[str, Requirement] = {}
    for line in _requirement_lines(spec):
        with contextlib.suppress(InvalidRequirement):
            requirement = Requirement(line)
            wanted[canonicalize_name(requirement.name)] = requirement
    exact = [
        name
        for name, requirement in wanted.items()
        if len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "=="
    ]
    have = {canonicalize_name(dist.metadata["Name"]) for dist in metadata.distributions(path=[str(target)])}
    chosen: dict[str, metadata.Distribution] = {}
    for other in others:
        site = _site_packages(other)
        if site is None:
            continue
        there = {
            canonicalize_name(dist.metadata["Name"]): dist
            for dist in metadata.distributions(path=[str(site)])
        }
        queue = [
            name for name in exact if name in there and wanted[name].specifier.contains(there[name].version)
        ]
        while queue:
            name = queue.pop()
            dist = there.get(name)
            if name in chosen or name in have or dist is None or dist.files is None:
                continue
            if name in wanted and not wanted[name].specifier.contains(dist.version, prereleases=True):
                continue
            chosen[name] = dist
            for needed in dist.requires or []:
                with contextlib.suppress(InvalidRequirement):
                    requirement = Requirement(needed)
                    if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                        queue.append(canonicalize_name(requirement.name))
    for dist in chosen.values():
        _link_distribution(dist, venv)
    return sorted(chosen)


def _link_distribution(dist: metadata.Distribution, venv: Path) -> None:
    site = Path(str(dist.locate_file(""))).resolve()
    other_venv = site.parent.parent.parent  # <venv>/lib/pythonX.Y/site-packages
    target_site = _site_packages(venv)
    assert target_site is not None
    for file in dist.files or []:
        source = Path(os.path.normpath(site / file))
        if not source.is_file():
            continue  # RECORD lists caches pip did not write
        if source.is_relative_to(site):
            destination = target_site / source.relative_to(site)
        elif source.is_relative_to(other_venv / "bin"):
            destination = venv / source.relative_to(other_venv)
        else:
            continue
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.parent == venv / "bin":  # a script: its #! names the other venv's python
            text = source.read_bytes().replace(str(other_venv).encode(), str(venv).encode(), 1)
            destination.write_bytes(text)
            destination.chmod(source.stat().st_mode)
            continue
        try:
            os.link(source, destination)
        except OSError:  # another file system: a copy still saves the download
            shutil.copy2(source, destination)


def _pip_progress(
    on_line: Callable[[str], None],
    on_progress: Callable[[float, str], None],
    title: str,
    start: float,
    share: float,
) -> Callable[[str], None]:
    """A line handler that passes pip's lines on and turns its phases into progress within the step:
    each package collected moves it a little (up to half), installing is 80%, done is 100%."""
    collected = 0

    def handle(line: str) -> None:
        nonlocal collected
        if _PIP_NOISE.match(line):
            return
        on_line(line)
        fraction = None
        if line.startswith("Collecting "):
            collected += 1
            fraction = min(0.5, 0.04 * collected)
        elif line.startswith("Installing collected packages"):
            fraction = 0.8
        elif line.startswith("Successfully installed"):
            fraction = 0.95
        if fraction is not None:
            on_progress(100 * (start + share * fraction), title)

    return handle


if __name__ == "__main__":  # python -m engines.environment link SPEC VENV OTHER_VENV...: an install step
    _, command, spec_path, venv_path, *other_paths = sys.argv
    assert command == "link", command
    linked = link_packages(Path(spec_path), Path(venv_path), [Path(path) for path in other_paths])
    print(f"linked {len(linked)} packages from the other environments: {', '.join(linked) or 'none'}")
