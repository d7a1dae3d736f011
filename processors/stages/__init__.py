"""The CPU stages, one module each, in flow order. gpu_workers holds the generate stage."""
