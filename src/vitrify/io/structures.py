"""Real atomic structures shipped in a PyPI package, for tests, benchmarks and the demo.

The ``mdanalysistests`` package (installed by ``make``) carries real PDB files; we
locate them on disk without importing the package (importing it pulls MDAnalysis).
Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vitrify.io.errors import InputError

#: short name -> (file inside MDAnalysisTests/data, what it is)
EXAMPLE_STRUCTURES: dict[str, tuple[str, str]] = {
    "adk": ("adk_open.pdb", "adenylate kinase, open form (214 residues, ~24 kDa)"),
    "cftr": ("6msm.pdb.bz2", "CFTR, real 3.2 A cryo-EM structure (~150 kDa)"),
    "adk_closed": ("adk_closed.pdb", "adenylate kinase, closed form (the open form's atoms, 214 residues)"),
    "1a28": ("1a28.pdb.gz", "progesterone receptor ligand-binding domain, a two-chain complex (~60 kDa)"),
}


def _mdanalysistests_data() -> Path:
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the example structures come from the 'mdanalysistests' package, which is not installed",
            expected="pip install mdanalysistests (make does this)",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def example_structure(name: str) -> Path:
    """Path of a real example structure by short name (``"adk"`` or ``"cftr"``).

    Examples
    --------
    >>> example_structure("adk").name
    'adk_open.pdb'
    """
    if name not in EXAMPLE_STRUCTURES:
        raise InputError(f"unknown example structure {name!r}", field="structure",
                         expected=" | ".join(EXAMPLE_STRUCTURES))
    path = _mdanalysistests_data() / EXAMPLE_STRUCTURES[name][0]
    if not path.exists():
        raise InputError("example structure file is missing", path=path)
    return path
