"""Which files a job reads (input nodes) and writes (output nodes), with RELION-4 node types.

Input nodes come from the job options that name input files (RELION-4 option names,
:data:`INPUT_OPTIONS`); a node already in the pipeline keeps its (more specific) type.
Output nodes are read after a job succeeded: the files of :data:`OUTPUT_FILES` that the
job wrote (``*`` patterns take the last match, e.g. the final ``run_itNNN_data.star``),
merged with the job's own ``RELION_OUTPUT_NODES.star``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitrify.jobs.registry import base_label

#: job option name → node type of the file it names.
INPUT_OPTIONS: dict[str, str] = {
    "input_star_mics": "MicrographsData.star.relion",
    "fn_input_autopick": "MicrographsData.star.relion",
    "star_mics": "MicrographsData.star.relion",
    "coords_suffix": "MicrographsCoords.star.relion",
    "fndata_reextract": "ParticlesData.star.relion",
    "fn_img": "ParticlesData.star.relion",
    "fn_cont": "ProcessData.star.relion.optimiser",
    "fn_mic": "MicrographsData.star.relion",
    "fn_data": "ParticlesData.star.relion",
    "fn_model": "ProcessData.star.relion.optimiser",
    "fn_coords": "MicrographsCoords.star.relion",
    "fn_ref": "DensityMap.mrc",
    "fn_mask": "Mask3D.mrc",
    "fn_refs_autopick": "ImagesData.star.relion",
}
_NOT_A_FILE = ("", "None", "none", "undefined", '""')

#: job type → (file pattern in the job directory, node type)
OUTPUT_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "relion.import": (("movies.star", "MicrographMoviesData.star.relion"),
                      ("micrographs.star", "MicrographsData.star.relion")),
    "relion.motioncorr": (("corrected_micrographs.star", "MicrographsData.star.relion.motioncorr"),
                          ("logfile.pdf", "LogFile.pdf.relion.motioncorr")),
    "relion.ctffind": (("micrographs_ctf.star", "MicrographsData.star.relion.ctf"),
                       ("logfile.pdf", "LogFile.pdf.relion.ctffind")),
    "relion.autopick": (("autopick.star", "MicrographsCoords.star.relion.autopick"),
                        ("logfile.pdf", "LogFile.pdf.relion.autopick")),
    "relion.extract": (("particles.star", "ParticlesData.star.relion"),),
    "relion.select": (("micrographs.star", "MicrographsData.star.relion"),
                      ("particles.star", "ParticlesData.star.relion"),
                      ("class_averages.star", "ImagesData.star.relion.classaverages")),
    "relion.class2d": (("run_it*_data.star", "ParticlesData.star.relion.class2d"),
                       ("run_it*_optimiser.star", "ProcessData.star.relion.optimiser.class2d")),
    "vitrify.simulate": (("particles.star", "ParticlesData.star.relion"),
                         ("micrographs.star", "MicrographsData.star.relion"),
                         ("movies.star", "MicrographMoviesData.star.relion")),
}


def input_nodes(options: dict[str, str], known: dict[str, str]) -> list[tuple[str, str]]:
    """(node path, node type) for each input-file option that names a file."""
    nodes = []
    for option, node_type in INPUT_OPTIONS.items():
        value = str(options.get(option, "")).strip()
        if value in _NOT_A_FILE or value.startswith("$$") or " " in value:
            continue
        nodes.append((value, known.get(value, node_type)))
    return nodes


def _output_file(job_dir: Path, pattern: str) -> Path | None:
    matches = sorted(job_dir.glob(pattern))
    return matches[-1] if matches else None


def _declared(job_dir: Path) -> list[tuple[str, str]]:
    from vitrify.io.star import read_star

    path = job_dir / "RELION_OUTPUT_NODES.star"
    if not path.exists():
        return []
    table = read_star(path, as_strings=True).get("output_nodes")
    if not isinstance(table, pd.DataFrame) or table.empty:
        return []
    return [(str(n), str(t)) for n, t in zip(table["rlnPipeLineNodeName"], table["rlnPipeLineNodeTypeLabel"])]


def output_nodes(root: Path, job_name: str, type_label: str) -> list[tuple[str, str]]:
    """(project-relative path, node type) of every output the job wrote."""
    job_dir = root / job_name
    found: dict[str, str] = {}
    for pattern, node_type in OUTPUT_FILES.get(base_label(type_label), ()):
        path = _output_file(job_dir, pattern)
        if path is not None:
            found[path.relative_to(root).as_posix()] = node_type
    for name, node_type in _declared(job_dir):
        path = Path(name)
        if path.is_absolute() and path.is_relative_to(root.resolve()):
            name = path.relative_to(root.resolve()).as_posix()
        found[name] = node_type
    return list(found.items())


def touch_node_markers(root: Path, nodes: list[tuple[str, str]]) -> None:
    """RELION's ``.Nodes/<kind>/<path>`` marker files for existing output nodes."""
    for name, node_type in nodes:
        if (root / name).exists():
            marker = root / ".Nodes" / node_type.split(".")[0] / name
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
