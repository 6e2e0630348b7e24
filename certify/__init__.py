"""Monte-Carlo certification engine: the noise sampler, confidence bounds, the smoothing methods (one module each
in certify/smoothing/) and robust conformal prediction. No files, no options: the runs are in certkit.runs."""
from certkit.certify.sampling import NoiseSampler, input_generator
from certkit.certify.smooth import Smooth
from certkit.certify.smoothing import (
    ABSTAIN,
    Certificate,
    Prediction,
    SmoothingMethod,
    register_smoothing,
    smoothing_method,
    smoothing_methods,
)
from certkit.certify.smoothing.gaussian import GaussianSmoothing

__all__ = ["ABSTAIN", "Certificate", "GaussianSmoothing", "NoiseSampler", "Prediction", "Smooth", "SmoothingMethod",
           "input_generator", "register_smoothing", "smoothing_method", "smoothing_methods"]
