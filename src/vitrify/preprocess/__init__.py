"""Preprocessing algorithms (L1): motion correction, CTF fitting, picking, extraction."""
