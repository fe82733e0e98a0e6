"""The build's one extra step: the conversion modules compiled with mypyc, where that can be done.

export() converts every request's spans into Mixpanel events; compiled, the same typed source does it in 60 to 65%
of the time (docs/performance.md). Which modules: otel_mixpanel/compiled.py. Everything else about the build
is in pyproject.toml.

- ``OTEL_MIXPANEL_COMPILE=0`` at build time builds pure Python (and an editable install then removes the
  compiled modules an earlier one left beside the sources).
- Other interpreters than CPython, and a build that cannot compile (no C compiler, a failing one, a mypy that
  cannot compile the source), get pure Python too, with a warning: the modules behave the same either way, only
  slower.
"""

from __future__ import annotations

import os
import platform
import runpy
import sys
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

_LISTS = runpy.run_path(str(Path(__file__).parent / "otel_mixpanel" / "compiled.py"))
COMPILED = [module.replace(".", "/") + ".py" for module in _LISTS["COMPILED_MODULES"]]
GROUP = _LISTS["SHARED_LIBRARY"].removesuffix("__mypyc")
COMPILE_VARIABLE = "OTEL_MIXPANEL_COMPILE"
COMPILER_FAILURES = (CCompilerError, CompileError, ExecError, LinkError, PlatformError, OSError)
# What pip runs setup.py for before building (the build's requirements, the metadata): no extension is built then,
# so mypyc's C generation, which takes seconds, is left for the build itself.
METADATA_COMMANDS = {"egg_info", "dist_info"}


def _warn(message: str) -> None:
    print(f"otel-mixpanel: {message}; building pure Python (the same behaviour, slower conversion)",
          file=sys.stderr)


def _remove_in_place_builds() -> None:
    """An editable install's earlier compiled modules, which would shadow the sources this build leaves pure."""
    for suffix in EXTENSION_SUFFIXES:
        Path(_LISTS["SHARED_LIBRARY"] + suffix).unlink(missing_ok=True)
        for source in map(Path, COMPILED):
            source.with_suffix(suffix).unlink(missing_ok=True)


def compiled_extensions() -> list[Any]:
    if os.environ.get(COMPILE_VARIABLE, "1") == "0":
        if "editable_wheel" in sys.argv:
            _remove_in_place_builds()
        return []
    if METADATA_COMMANDS & set(sys.argv[1:]):
        return []
    if platform.python_implementation() != "CPython":
        _warn(f"mypyc compiles for CPython only, not {platform.python_implementation()}")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without build isolation, in an environment without mypy
        _warn("mypyc (the mypy package) is not installed")
        return []
    with tempfile.TemporaryDirectory() as scratch:
        # Not pyproject.toml's strict settings, which CI checks with the dependencies installed: the build
        # environment has none of them, so their types are left to the run time, and compiled code treats their
        # values as any object, which is always correct. Only the compiled modules' own errors count
        # (the modules they import are read for their types, here under the building interpreter's version).
        config = Path(scratch, "mypy.ini")
        config.write_text("[mypy]\nignore_missing_imports = True\n[mypy-otel_mixpanel.*]\nignore_errors = True\n"
                          + "".join(f"[mypy-{module}]\nignore_errors = False\n" for module in _LISTS["COMPILED_MODULES"]))
        try:
            extensions: list[Any] = mypycify(["--config-file", str(config), *COMPILED], group_name=GROUP)
        except (Exception, SystemExit) as error:
            # A mypy release that reads the source differently must not stop an install: CI, which requires the
            # compiled build, reports it instead.
            _warn(f"mypyc could not compile ({type(error).__name__}: {error})")
            return []
    return extensions


class BuildExtOrPurePython(build_ext):
    """Compiles the extensions, or, when the compiler fails, leaves none of them: half a set would not import."""

    def run(self) -> None:
        try:
            super().run()
        except COMPILER_FAILURES as error:
            for extension in self.extensions:
                # Where this build puts it: the source tree for an editable install, the build directory otherwise.
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            self.extensions = []
            _warn(f"compiling failed ({type(error).__name__}: {error})")

    def get_outputs(self) -> list[str]:
        return super().get_outputs() if self.extensions else []


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": BuildExtOrPurePython})
