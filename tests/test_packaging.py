"""Packaging: every source package is listed in pyproject, so a non-editable `pip install .` ships it."""
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("certkit",) + p.parent.relative_to(ROOT).parts)
             for p in ROOT.rglob("__init__.py")
             if not any(part.startswith(".") or part in ("tests", "build", "site") for part in
                        p.relative_to(ROOT).parts)}
    assert "certkit" in found and found <= listed, sorted(found - listed)
    assert (ROOT / "models" / "pretrained" / "digits_mlp_sigma025.pt").is_file()


def test_top_level_api_and_version():
    import subprocess
    import sys

    import certkit

    assert certkit.__version__ and certkit.__version__ != "0+unknown"
    for name in certkit.__all__:
        assert getattr(certkit, name) is not None, name
    from certkit.models import load_model

    assert certkit.load_model is load_model
    # importing certkit alone does not import torch (the command line and help stay fast)
    code = "import sys, certkit; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
