"""Evaluation on real labelled scans (``python -m patchalign_ros evaluate-real``)."""
