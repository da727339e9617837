"""Simulator (L1): realistic cryo-EM data with ground truth, from real atomic models."""
