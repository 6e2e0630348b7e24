"""Small pieces every certkit layer shares: the user-error type and device selection.

Nothing here imports any other part of certkit.
"""
from certkit.common.device import resolve_device
from certkit.common.errors import CertkitError

__all__ = ["CertkitError", "resolve_device"]
