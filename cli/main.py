"""The ``certkit`` command group; each command is one module of this package."""
from __future__ import annotations

import warnings

import click

from certkit.cli.options import warn_to_stderr


class CertkitGroup(click.Group):
    """The command group. Called as a program (the ``certkit`` script, ``python -m certkit.cli``: click's
    ``__call__``) its command owns the process, so time limits count from the process start (common/clock.py);
    invoked with ``main.main(args)`` (tests, notebooks) they count from the command's start."""

    def __call__(self, *args, **kwargs):
        from certkit.common.clock import start_command

        start_command(owns_process=True)
        return super().__call__(*args, **kwargs)

    def main(self, *args, **kwargs):
        from certkit.common.clock import _COMMAND, start_command

        if not _COMMAND["owns_process"]:
            start_command(owns_process=False)
        return super().main(*args, **kwargs)


@click.group(cls=CertkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="certkit")
def main():
    """certkit: certified robustness for PyTorch models.

    Radii and noise levels are in the model's data range ([0,1] pixels), before normalization.
    """
    from certkit.common.memory import retain_freed_memory

    warnings.showwarning = warn_to_stderr
    retain_freed_memory()   # the command owns its process: keep freed memory for reuse (common/memory.py)
