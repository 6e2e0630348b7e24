"""The ``certkit`` command group; each command is one module of this package."""
from __future__ import annotations

import warnings

import click

from certkit.cli.options import warn_to_stderr


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="certkit")
def main():
    """certkit: certified robustness for PyTorch models.

    Radii and noise levels are in the model's data range ([0,1] pixels), before normalization.
    """
    from certkit.common.memory import retain_freed_memory

    warnings.showwarning = warn_to_stderr
    retain_freed_memory()   # the command owns its process: keep freed memory for reuse (common/memory.py)
