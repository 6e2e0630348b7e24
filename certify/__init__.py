"""Monte-Carlo certification: Gaussian randomized smoothing (CERTIFY / PREDICT) and its shared engine."""
from certkit.certify.gaussian import ABSTAIN, Certificate, GaussianSmoothing
from certkit.certify.sampling import NoiseSampler, input_generator

__all__ = ["ABSTAIN", "Certificate", "GaussianSmoothing", "NoiseSampler", "input_generator"]
