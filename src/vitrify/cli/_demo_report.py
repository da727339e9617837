"""What ``vitrify demo`` found, in words a biologist can use: where the results are and what
the FSC and the 2D classes mean. The numbers come from the job directories and the truth file.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table


def class_table(data_star: Path, truth_star: Path) -> pd.DataFrame:
    """One row per 2D class, largest first: ``class``, ``particles``, ``share`` (fraction of
    all images), ``junk`` (fraction of its images that were simulated junk, from the truth)
    and ``resolution_angst`` (the class's estimated resolution, from the model STAR file)."""
    from vitrify.io.star import absolute_image_names, read_star

    data = read_star(data_star)["particles"][["rlnImageName", "rlnClassNumber"]].copy()
    truth = read_star(truth_star)["particles"][["rlnImageName", "vtfJunkKind"]].copy()
    for table, path in ((data, data_star), (truth, truth_star)):  # each file names images its own way
        table["rlnImageName"] = absolute_image_names(table["rlnImageName"], path).to_numpy()
    merged = data.merge(truth, on="rlnImageName", how="left")
    merged["is_junk"] = merged["vtfJunkKind"].fillna("none") != "none"
    table = merged.groupby("rlnClassNumber").agg(particles=("is_junk", "size"), junk=("is_junk", "mean"))
    table["share"] = table["particles"] / len(merged)
    model_star = data_star.with_name(data_star.name.replace("_data.star", "_model.star"))
    if model_star.is_file():
        classes = read_star(model_star)["model_classes"]
        resolution = pd.Series(classes["rlnEstimatedResolution"].to_numpy(),
                               index=range(1, len(classes) + 1))
        table["resolution_angst"] = resolution.reindex(table.index)
    table = table.rename_axis("class").reset_index().sort_values("particles", ascending=False)
    return table.reset_index(drop=True)


def _fsc_text(summary: dict, pixel_size_angst: float) -> str:
    return (
        f"[bold]3D map vs truth.[/] The particles were put back together at their true orientations "
        f"and the map compared with the map of the atomic model (Fourier shell correlation, FSC). "
        f"They agree down to {summary['resolution_05']:.1f} Å (FSC 0.5) and "
        f"{summary['resolution_0143']:.1f} Å (FSC 0.143). The finest detail these images can hold is "
        f"{2 * pixel_size_angst:.1f} Å (twice the pixel size); noise and the CTF take the rest. With "
        f"real data the orientations are unknown and RELION quotes the FSC between two half maps "
        f"at 0.143; here the truth is known, so this number checks the whole chain (simulation, "
        f"file formats, CTF and angle conventions) rather than a refinement.")


def _class_text(table: pd.DataFrame, junk_total: int, n_images: int) -> str:
    junk_classes = table[table["junk"] >= 0.5]
    caught = int((junk_classes["particles"] * junk_classes["junk"]).round().sum())
    good = table[table["junk"] < 0.5]
    good_purity = 1 - (good["particles"] * good["junk"]).sum() / max(good["particles"].sum(), 1)
    text = (f"[bold]2D classes.[/] Each class average is the mean of the images that show the "
            f"molecule in a similar view, aligned; sharp averages with protein-like detail are good "
            f"particles, blurred or featureless ones collect junk (ice, carbon, aggregates, empty "
            f"noise). {junk_total} of the {n_images} images were simulated junk. ")
    if len(junk_classes):
        text += (f"{len(junk_classes)} class(es) are mostly junk and hold {caught} of them: those are "
                 f"the classes you would deselect (vitrify select / RELION Subset selection) before "
                 f"3D work. ")
    else:
        text += ("No class is mostly junk: with few images or iterations the junk stays spread "
                 "over the classes (run more iterations, or more classes, to pull it out). ")
    return text + (f"The {len(good)} other class(es) hold {int(good['particles'].sum())} images, "
                   f"{good_purity:.0%} of them real particles.")


def print_report(console: Console, out: Path, summary: dict, pixel_size_angst: float) -> None:
    """Print where the results are and what they mean."""
    rec = out / "Reconstruct" / "job002"
    console.print("\n[bold green]Results[/]")
    say = functools.partial(console.print, soft_wrap=True)  # paths stay whole, never wrapped
    say(f"  simulated data + truth: {out / 'Simulate' / 'job001'} "
        f"(particles.star, particles.mrcs, truth.star, truth_map.mrc)")
    say(f"  3D map: {rec / 'reconstruction.mrc'}, FSC curve: {rec / 'fsc.star'}")
    say(f"    view it with the truth: chimerax {rec / 'reconstruction.mrc'} "
        f"{out / 'Simulate' / 'job001' / 'truth_map.mrc'}")
    if "class_table" in summary:
        data_star = Path(summary["class2d_data"])
        png = data_star.with_name(data_star.name.replace("_data.star", "_classes.png"))
        say(f"  2D class averages: {png} (and _classes.mrcs for relion_display)")
    console.print("\n[bold]What the results mean[/]")
    console.print(_fsc_text(summary, pixel_size_angst))
    if "class_table" in summary:
        table = summary["class_table"]
        view = Table("class", "images", "share", "junk", "est. resolution")
        for row in table.to_dict("records"):
            resolution = row.get("resolution_angst", float("nan"))
            view.add_row(str(row["class"]), str(row["particles"]), f"{row['share']:.1%}",
                         f"{row['junk']:.0%}", f"{resolution:.1f} Å" if resolution == resolution else "-")
        console.print(view)
        console.print(_class_text(table, summary["junk_images"], int(table["particles"].sum())))
