"""Training losses for ``certkit train``, one module each, registered with
:func:`certkit.train.classifier.register_training` (imported by :func:`certkit.train.classifier.training_methods`)."""
