"""Built-in verifiers, one module each, registered with :func:`certkit.verifiers.registry.register_verifier`."""
