"""What the built wheel carries: the licence text, the typing marker, the version and licence metadata, no tests,
and the conversion modules compiled or pure as expected (setup.py).

Usage: python .ci/check_wheel.py <directory holding the one otel_mixpanel wheel> compiled|pure
"""

from __future__ import annotations

import email
import runpy
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTS = runpy.run_path(str(ROOT / "otel_mixpanel" / "compiled.py"))


def main(directory: str, build: str) -> None:
    [wheel] = Path(directory).glob("otel_mixpanel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(archive.read(meta_name))
        [licence] = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
        licence_text = archive.read(licence).decode()
    version: dict[str, str] = {}
    exec((ROOT / "otel_mixpanel" / "version.py").read_text(), version)
    assert "otel_mixpanel/py.typed" in names, "no py.typed"
    assert licence_text == (ROOT / "LICENSE").read_text(), "the licence file differs"
    assert meta["Version"] == version["__version__"], (meta["Version"], version["__version__"])
    assert meta["License-Expression"] == "Apache-2.0", meta["License-Expression"]
    assert "Typing :: Typed" in meta.get_all("Classifier"), "no Typing classifier"
    stray = [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
    assert not stray, stray
    compiled = {n.split(".")[0].replace("/", ".") for n in names if n.endswith((".so", ".pyd"))}
    expected = {LISTS["SHARED_LIBRARY"], *LISTS["COMPILED_MODULES"]} if build == "compiled" else set()
    assert compiled == expected, sorted(compiled ^ expected)
    print(f"{wheel.name}: licence, py.typed and metadata as declared, conversion {build}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
