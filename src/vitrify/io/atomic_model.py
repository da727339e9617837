"""Atomic models (PDB / mmCIF, plain or ``.gz`` / ``.bz2``) <-> plain arrays, via gemmi.

An :class:`AtomicModel` is a frozen bundle of numpy arrays (positions in Å, element
symbols, isotropic B-factors, occupancies, chain names): what a map simulator needs
and nothing more. Only the first model of a multi-model file is read; waters are
dropped unless asked for.

PDB files written by simulation packages (CHARMM, NAMD) often have no element column
and atom names shifted one column left, so gemmi's guess turns ``CA`` into calcium and
``HG1`` into mercury. When a PDB file has no element columns at all, the element of
an atom in a standard amino-acid or nucleotide residue is taken from the first letter
of its name, as the PDB naming rules define it.
"""

from __future__ import annotations

import bz2
import gzip
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

from vitrify.io.atomic import atomic_path
from vitrify.io.errors import InputError

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open}
_CIF_SUFFIXES = (".cif", ".mmcif")
_SELENIUM_NAMES = {("MSE", "SE"), ("SEC", "SE")}
#: CHARMM/AMBER residue names -> the standard residue they stand for
_RESIDUE_ALIASES = {"HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS",
                    "HIP": "HIS", "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU",
                    "LYN": "LYS"}


@dataclass(frozen=True)
class AtomicModel:
    """Atoms of one model as arrays.

    Attributes
    ----------
    positions_angst
        ``(n, 3)`` float64, Cartesian x, y, z in Å.
    elements
        ``(n,)`` element symbols as gemmi spells them (``"C"``, ``"Se"``).
    b_iso_angst2
        ``(n,)`` isotropic B-factors in Å².
    occupancies
        ``(n,)`` occupancies in [0, 1].
    chain_ids
        ``(n,)`` chain names (may be empty strings).
    """

    positions_angst: np.ndarray
    elements: np.ndarray
    b_iso_angst2: np.ndarray
    occupancies: np.ndarray
    chain_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.positions_angst)
        if self.positions_angst.shape != (n, 3):
            raise ValueError(f"positions must be (n, 3), got {self.positions_angst.shape}")
        for name in ("elements", "b_iso_angst2", "occupancies", "chain_ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have {n} entries")

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.positions_angst)

    @property
    def masses_dalton(self) -> np.ndarray:
        """``(n,)`` atomic masses (Da) times occupancy."""
        weights = np.array([gemmi.Element(e).weight for e in self.elements], dtype=np.float64)
        return weights * self.occupancies

    def centre_of_mass_angst(self) -> np.ndarray:
        """``(3,)`` mass-weighted centre (x, y, z) in Å."""
        masses = self.masses_dalton
        return (self.positions_angst * masses[:, None]).sum(axis=0) / masses.sum()

    def max_radius_angst(self, centre_angst: np.ndarray | None = None) -> float:
        """Largest distance (Å) of an atom from ``centre_angst`` (default: centre of mass)."""
        centre = self.centre_of_mass_angst() if centre_angst is None else np.asarray(centre_angst)
        return float(np.linalg.norm(self.positions_angst - centre, axis=1).max())

    def chain_names(self) -> list[str]:
        """Distinct chain names in file order."""
        return list(dict.fromkeys(self.chain_ids.tolist()))

    def select(self, keep: np.ndarray) -> AtomicModel:
        """A new model with the atoms where the boolean ``(n,)`` mask ``keep`` is true."""
        return AtomicModel(self.positions_angst[keep], self.elements[keep], self.b_iso_angst2[keep],
                           self.occupancies[keep], self.chain_ids[keep])

    def select_chain(self, chain_id: str | None = None) -> AtomicModel:
        """The atoms of one chain (default: the first chain of the file)."""
        names = self.chain_names()
        chain_id = names[0] if chain_id is None else chain_id
        if chain_id not in names:
            raise InputError(f"no chain {chain_id!r} in the model", field="chain",
                             expected=" | ".join(repr(c) for c in names))
        return self.select(self.chain_ids == chain_id)

    def transformed(self, rotation: np.ndarray, translation_angst: np.ndarray,
                    chain_id: str | None = None) -> AtomicModel:
        """Atoms moved to ``rotation @ x + translation`` (``(3, 3)``, ``(3,)``)."""
        positions = self.positions_angst @ np.asarray(rotation, np.float64).T
        chains = self.chain_ids if chain_id is None else np.full(self.n_atoms, chain_id, dtype=object)
        return AtomicModel(positions + np.asarray(translation_angst, np.float64), self.elements,
                           self.b_iso_angst2, self.occupancies, chains)


def concatenate_models(models: list[AtomicModel]) -> AtomicModel:
    """One model holding the atoms of all ``models`` in order."""
    if not models:
        raise ValueError("no models to concatenate")
    return AtomicModel(*(np.concatenate([getattr(m, f) for m in models])
                         for f in ("positions_angst", "elements", "b_iso_angst2", "occupancies",
                                   "chain_ids")))


def _read_text(path: Path) -> tuple[str, str]:
    """Return (text, format suffix without compression) of a possibly compressed file."""
    suffixes = [s.lower() for s in path.suffixes]
    opener = _OPENERS.get(suffixes[-1] if suffixes else "")
    fmt = suffixes[-2] if opener and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    try:
        if opener is None:
            return path.read_text(errors="replace"), fmt
        with opener(path, "rt", errors="replace") as handle:
            return handle.read(), fmt
    except (OSError, EOFError, ValueError) as err:
        raise InputError(f"cannot read atomic model ({err})", path=path) from err


def _parse(text: str, fmt: str, path: Path) -> gemmi.Structure:
    try:
        if fmt in _CIF_SUFFIXES or text.lstrip().startswith("data_"):
            return gemmi.make_structure_from_block(gemmi.cif.read_string(text)[0])
        return gemmi.read_pdb_string(text)
    except (RuntimeError, ValueError, IndexError) as err:
        raise InputError(f"not a readable PDB/mmCIF file ({err})", path=path,
                         expected="a PDB or mmCIF atomic model") from err


def _pdb_has_no_elements(text: str) -> bool:
    """True when no ATOM/HETATM record of a PDB text fills the element columns 77-78."""
    records = [line for line in text.splitlines() if line.startswith(("ATOM", "HETATM"))]
    return bool(records) and all(len(line) < 78 or not line[76:78].strip() for line in records)


def _element_from_name(residue_name: str, atom_name: str) -> str | None:
    """Element of an atom in a standard polymer residue, from its PDB atom name."""
    if (residue_name, atom_name) in _SELENIUM_NAMES:
        return "Se"
    info = gemmi.find_tabulated_residue(_RESIDUE_ALIASES.get(residue_name, residue_name))
    if info is None or not (info.is_amino_acid() or info.is_nucleic_acid()):
        return None
    letters = [c for c in atom_name if c.isalpha()]
    return letters[0].upper() if letters else None


def _fix_elements(model: gemmi.Model) -> None:
    for chain in model:
        for residue in chain:
            for atom in residue:
                element = _element_from_name(residue.name, atom.name.strip())
                if element is not None:
                    atom.element = gemmi.Element(element)


def _arrays(model: gemmi.Model) -> AtomicModel:
    rows = [(a.pos.x, a.pos.y, a.pos.z, a.element.name, a.b_iso, a.occ, ch.name)
            for ch in model for res in ch for a in res]
    columns = list(zip(*rows))
    return AtomicModel(
        positions_angst=np.array(columns[:3], dtype=np.float64).T.reshape(-1, 3),
        elements=np.array(columns[3], dtype=object),
        b_iso_angst2=np.array(columns[4], dtype=np.float64),
        occupancies=np.clip(np.array(columns[5], dtype=np.float64), 0.0, 1.0),
        chain_ids=np.array(columns[6], dtype=object),
    )


def read_atomic_model(path: str | Path, *, keep_waters: bool = False,
                      keep_hydrogens: bool = True) -> AtomicModel:
    """Read the first model of a PDB or mmCIF file (plain, ``.gz`` or ``.bz2``).

    Atoms of unknown element are dropped. Raises :class:`InputError` for a missing,
    unreadable or empty file.

    Examples
    --------
    >>> from vitrify.io.structures import example_structure
    >>> model = read_atomic_model(example_structure("adk"))
    >>> sorted(set(model.elements))
    ['C', 'H', 'N', 'O', 'S']
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("atomic model file not found", path=path)
    text, fmt = _read_text(path)
    structure = _parse(text, fmt, path)
    if len(structure) == 0:
        raise InputError("no atoms found", path=path, expected="ATOM/HETATM records or _atom_site")
    if not keep_waters:
        structure.remove_waters()
    if not keep_hydrogens:
        structure.remove_hydrogens()
    model = structure[0]
    if fmt not in _CIF_SUFFIXES and _pdb_has_no_elements(text):
        _fix_elements(model)
    if model.count_atom_sites() == 0:
        raise InputError("no atoms found", path=path, expected="ATOM/HETATM records or _atom_site")
    atoms = _arrays(model)
    return atoms.select(atoms.elements != "X")


def to_gemmi_model(atoms: AtomicModel) -> gemmi.Model:
    """A gemmi model with one residue per atom run of a chain (for density and writing)."""
    model = gemmi.Model("1")
    for chain_id in atoms.chain_names():
        chain = gemmi.Chain(chain_id or "A")
        residue = gemmi.Residue()
        residue.name = "UNK"
        residue.seqid = gemmi.SeqId(1, " ")
        for i in np.flatnonzero(atoms.chain_ids == chain_id):
            atom = gemmi.Atom()
            atom.name = atoms.elements[i].upper()
            atom.element = gemmi.Element(atoms.elements[i])
            atom.pos = gemmi.Position(*atoms.positions_angst[i])
            atom.b_iso = float(atoms.b_iso_angst2[i])
            atom.occ = float(atoms.occupancies[i])
            residue.add_atom(atom)
        chain.add_residue(residue)
        model.add_chain(chain)
    return model


def write_atomic_model(path: str | Path, atoms: AtomicModel) -> Path:
    """Write ``atoms`` as mmCIF (``.cif``) or PDB (any other suffix), atomically.

    Residue identities are not kept (every atom is in a ``UNK`` residue): the file is
    for viewing and for re-simulating maps, not for model building.
    """
    path = Path(path)
    structure = gemmi.Structure()
    structure.add_model(to_gemmi_model(atoms))
    structure.setup_entities()
    with atomic_path(path) as tmp:
        if path.suffix.lower() in _CIF_SUFFIXES:
            structure.make_mmcif_document().write_file(str(tmp))
        else:
            structure.write_pdb(str(tmp))
    return path
