"""Triton Python-backend models. ``preprocess_model`` and ``guard_model`` are copied into the
repositories ``dgla-export triton`` writes (with ``preprocess.py`` beside them: numpy and Pillow
only); the others stand in for backends the pip-installed Triton lacks, in ``dgla-serve``'s
serving copy."""
