"""Packaging: every source package is listed in pyproject, so a non-editable `pip install .` ships it."""
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"certkit"} | {"certkit." + ".".join(p.parent.relative_to(ROOT).parts)
                           for p in ROOT.rglob("__init__.py")
                           if not any(part.startswith(".") or part in ("tests", "build") for part in
                                      p.relative_to(ROOT).parts)}
    assert found <= listed, sorted(found - listed)
    assert (ROOT / "models" / "pretrained" / "digits_mlp_sigma025.pt").is_file()
