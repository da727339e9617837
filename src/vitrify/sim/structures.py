"""Structures for simulation: example names or files, optionally built into symmetric assemblies."""

from __future__ import annotations

from pathlib import Path

from vitrify.io.atomic_model import AtomicModel, read_atomic_model
from vitrify.io.errors import InputError
from vitrify.io.structures import EXAMPLE_STRUCTURES, example_structure


def resolve_structure_path(name: str) -> Path:
    """A file path, or the path of a bundled example (``"adk"``, ``"cftr"``) by name."""
    path = Path(name)
    if path.is_file():
        return path
    if name in EXAMPLE_STRUCTURES:
        return example_structure(name)
    raise InputError("structure file not found", path=name, field="--structure",
                     expected=f"a PDB/mmCIF file (.gz/.bz2 allowed) or one of "
                              f"{', '.join(EXAMPLE_STRUCTURES)}")


def load_structure(name: str, *, symmetry: str = "C1") -> AtomicModel:
    """Atoms of ``name`` (file or example); for ``symmetry`` other than C1, an assembly
    of copies of its first chain (:func:`vitrify.sim.assemblies.build_assembly`)."""
    atoms = read_atomic_model(resolve_structure_path(name))
    if symmetry.upper() in ("C1", ""):
        return atoms
    from vitrify.sim.assemblies import build_assembly

    return build_assembly(atoms.select_chain(), symmetry)
