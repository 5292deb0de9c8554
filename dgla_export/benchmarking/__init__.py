"""dgla-bench: every runtime checked against the PyTorch FP32 reference, then timed."""
