"""Procedural part-labelled shapes and simulated depth captures."""
