"""RELION-4 Schemes: ``scheme.star`` model, operators, validation and the schemer (runner).

Public entry points: :func:`vitrify.pipeline.schemes.star.read_scheme` /
:func:`~vitrify.pipeline.schemes.star.write_scheme` and the runner in
:mod:`vitrify.pipeline.schemes.runner`. Nothing is imported here (no side effects).
"""
