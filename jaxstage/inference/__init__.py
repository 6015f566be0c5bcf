"""Inference: load a run for sampling, text-to-audio and super-resolution generation."""
