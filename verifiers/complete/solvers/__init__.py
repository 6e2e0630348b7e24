"""Built-in verifiers, one module each, registered with
:func:`certkit.verifiers.complete.registry.register_verifier`."""
