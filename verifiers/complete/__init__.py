"""Complete verification of VNN-COMP instances: the VNN-LIB parser (vnnlib.py), the result-file format
(vnncomp_format.py), how an instance is answered (strategy.py), input-split branch and bound (input_split.py),
activation-split branch and bound with beta-CROWN and GenBaB (beta_crown.py), and the registered verifiers
(registry.py, one module each in solvers/)."""
