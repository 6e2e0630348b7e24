"""Bound propagation and verification (IBP, CROWN-IBP, CROWN, alpha-CROWN): see the project's issues."""
