"""Job ``autopick``: particle picking → per-micrograph coordinate STAR files + ``autopick.star``.

Methods (dispatch table :data:`PICKERS`): ``log`` (Laplacian-of-Gaussian,
:mod:`vitrify.preprocess.picking`), ``topaz`` (the optional ``topaz-em`` package; a clear
message when it is absent). Each micrograph gets ``<job>/<mic path>_autopick.star``
(RELION's per-micrograph coordinate file: rlnCoordinateX/Y, rlnClassNumber,
rlnAutopickFigureOfMerit, rlnAnglePsi); ``autopick.star`` lists them
(data_coordinate_files). A few micrographs get a PNG with the picks drawn. Existing
coordinate files are kept on a re-run (only new micrographs are picked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import Skips, flag, number, relative_output, text, write_output_nodes
from vitrify.preprocess.picking import LogPickOptions, Picks

METHODS = ("log", "topaz")


@dataclass(frozen=True)
class Options:
    """Auto-picking job.

    Attributes
    ----------
    input_star
        micrographs(_ctf).star [fn_input_autopick].
    method
        ``log`` or ``topaz``.
    log
        LoG settings (diameters, threshold adjustment, low-pass, invert).
    n_png
        How many micrographs get a PNG overlay of their picks.
    topaz_model, topaz_diameter_angst
        Topaz pretrained model name and particle diameter (method ``topaz``).
    """

    input_star: str
    method: str = "log"
    log: LogPickOptions = LogPickOptions(150.0, 180.0)
    n_png: int = 3
    topaz_model: str = "resnet16_u64"
    topaz_diameter_angst: float = 100.0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown picking method {self.method!r}", field="method",
                             expected=" | ".join(METHODS))
        if not self.input_star:
            raise InputError("no input micrographs STAR file", field="fn_input_autopick",
                             expected="a micrographs.star path")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION AutoPick job.star values (``fn_input_autopick``, ``do_log``,
    ``do_topaz``, ``log_diam_min``, ``log_diam_max``, ``log_invert``, ``log_maxres``,
    ``log_adjust_thr``, ``log_upper_thr``, ``topaz_particle_diameter``)."""
    method = "topaz" if flag(values, "do_topaz", False) and not flag(values, "do_log", False) else "log"
    log = LogPickOptions(
        diameter_min_angst=number(values, "log_diam_min", 150.0),
        diameter_max_angst=number(values, "log_diam_max", 180.0),
        lowpass_angst=number(values, "log_maxres", 20.0),
        invert=flag(values, "log_invert", False),
        threshold_adjust=number(values, "log_adjust_thr", 0.0),
        upper_threshold=number(values, "log_upper_thr", 999.0),
    )
    return Options(input_star=text(values, "fn_input_autopick"), method=method, log=log,
                   topaz_model=text(values, "topaz_model", "resnet16_u64"),
                   topaz_diameter_angst=number(values, "topaz_particle_diameter", 100.0))


def _pick_log(image, pixel_size_angst: float, options: Options) -> Picks:
    from vitrify.preprocess.picking import pick_log

    return pick_log(image, pixel_size_angst, options.log)


def _pick_topaz(image, pixel_size_angst: float, options: Options) -> Picks:
    try:
        import topaz  # noqa: F401
    except ImportError:
        raise InputError("Topaz picking needs the optional topaz-em package, which is not installed",
                         field="method", expected="'pip install --no-deps topaz-em' or --method log") from None
    from vitrify.preprocess.topaz_pick import pick_topaz

    return pick_topaz(image, pixel_size_angst, options.topaz_diameter_angst, options.topaz_model)


#: method name → picker(image (ny, nx) tensor, pixel size Å, options) → Picks
PICKERS: dict[str, Callable[..., Picks]] = {"log": _pick_log, "topaz": _pick_topaz}


def coordinates_table(picks: Picks) -> pd.DataFrame:
    """RELION's per-micrograph coordinate table for ``picks``."""
    n = len(picks)
    return pd.DataFrame({"rlnCoordinateX": picks.x_px.astype(float), "rlnCoordinateY": picks.y_px.astype(float),
                         "rlnClassNumber": np.zeros(n, dtype=int),
                         "rlnAutopickFigureOfMerit": picks.figure_of_merit.astype(float),
                         "rlnAnglePsi": np.full(n, -999.0)})


def _write_overlay(path: Path, image: np.ndarray, picks: Picks, radius_px: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from vitrify.io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]), dpi=100)
    lo, hi = np.percentile(image, [1, 99])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    for x, y in zip(picks.x_px, picks.y_px):
        ax.add_patch(Circle((x, y), radius_px, fill=False, color="lime", linewidth=0.8))
    ax.set_title(f"{len(picks)} picks", fontsize=8)
    ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _pick_one(row: pd.Series, options: Options, job_dir: Path, device, png: bool) -> Path:
    import torch

    from vitrify.io.mrc import read_mrc
    from vitrify.io.star import write_star

    name = str(row["rlnMicrographName"])
    out = relative_output(job_dir, name, "_autopick.star")
    if out.exists():
        return out
    data, _ = read_mrc(name)
    image = torch.as_tensor(np.asarray(data, dtype=np.float32)).to(device)
    if float(image.std()) == 0.0:
        raise InputError("micrograph is blank", path=name, expected="an image with signal")
    pixel = float(row["rlnMicrographPixelSize"])
    picks = PICKERS[options.method](image, pixel, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_star(out, {"": coordinates_table(picks)})
    if png:
        radius = 0.5 * options.log.diameter_max_angst / pixel
        _write_overlay(out.with_suffix(".png"), np.asarray(data, dtype=np.float32), picks, radius)
    return out


def run(options: Options, job_dir: str | Path) -> Path:
    """Pick every micrograph; write the coordinate files and ``job_dir/autopick.star``."""
    from vitrify._progress import track
    from vitrify.core.device import resolve_device
    from vitrify.io.star import read_star_optics, write_star
    from vitrify.jobs.base import check_abort

    job_dir = Path(job_dir)
    log = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    device = resolve_device(options.device)
    star = read_star_optics(options.input_star, "micrographs")
    skips = Skips(job_dir)
    mics, files = [], []
    for i in track(range(len(star.merged)), "Auto-picking"):
        check_abort(job_dir)
        row = star.merged.iloc[i]
        try:
            out = _pick_one(row, options, job_dir, device, png=i < options.n_png)
        except InputError as err:
            skips.add(str(row["rlnMicrographName"]), str(err), log)
            continue
        mics.append(str(row["rlnMicrographName"]))
        files.append(out.as_posix())
    output = job_dir / "autopick.star"
    write_star(output, {"coordinate_files": pd.DataFrame({"rlnMicrographName": mics,
                                                          "rlnMicrographCoordinates": files})})
    skips.write()
    write_output_nodes(job_dir, [(output, "MicrographsCoords.star.relion.autopick")])
    log.info("%d micrographs picked, %d skipped", len(files), len(skips.items))
    return output
