"""What the pipeline demo found, in plain words, against the simulation's truth.

Reads the summary of :func:`vitrify.cli._demo_results.collect_results` (also in
``demo_report.json``) and prints: what ran, how close each step came to the truth, how the
on-the-fly rounds kept up with the microscope, where the 2D class gallery is, and the commands
to look at the project.
"""

from __future__ import annotations

import functools
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vitrify.jobs import registry


def _motion_text(motion: dict) -> str:
    return (f"[bold]Motion correction.[/] The stage drifted about {motion['median_drift_px']:.1f} px during "
            f"each exposure. The drift found agrees with the simulated one to {motion['median_rms_px']:.2f} px "
            f"RMS over the frames (median of {motion['movies']} movies; worst {motion['max_rms_px']:.2f} px). "
            f"Below 0.5 px the blur left by the drift is negligible at this pixel size.")


def _ctf_text(ctf: dict, summary: dict) -> str:
    low, high = ctf["defocus_range_nm"]
    text = (f"[bold]CTF estimation.[/] True defocus ranged over {low:.0f}–{high:.0f} nm; the fitted mean "
            f"defocus is off by {ctf['median_abs_defocus_error_nm']:.0f} nm (median; worst "
            f"{ctf['max_abs_defocus_error_nm']:.0f} nm) and the astigmatism by "
            f"{ctf['median_abs_astig_error_nm']:.0f} nm. Errors below ~100 nm do not limit 2D classes at "
            f"this resolution. The fits reach {ctf['median_max_resolution_angst']:.1f} Å (median).")
    if "selected_micrographs" in summary:
        limit = summary.get("settings", {}).get("max_ctf_resolution_angst")
        rule = f" (CTF fit better than {limit:g} Å)" if limit else ""
        text += (f" {summary['selected_micrographs']} of {ctf['micrographs']} micrographs passed the "
                 f"selection{rule}.")
    return text


def _picking_text(picking: dict, summary: dict) -> str:
    false = picking["picks"] - picking["found"]
    text = (f"[bold]Particle picking[/] (Laplacian-of-Gaussian, no templates). {picking['picks']} picks; "
            f"{picking['found']} of the {picking['true_on_picked']} true particles on those micrographs were "
            f"found (recall {picking['recall']:.0%}), {false} picks are not particles (precision "
            f"{picking['precision']:.0%}; carbon edges and ice gradients attract false picks). A pick counts "
            f"as found within {summary['match_tolerance_px']:.0f} px of a true centre.")
    if "extracted" in summary:
        text += (f" [bold]Extraction[/] cut {summary['extracted']} particle images, {summary['extracted_real']} "
                 f"of them real particles (true particles in the whole session: {summary['true_particles']}; "
                 f"picks whose box crosses the micrograph edge are left out).")
    return text


def _class_text(class2d: dict) -> str:
    table = class2d["table"]
    junk = [row for row in table if row["real"] < 0.5]
    good = [row for row in table if row["real"] >= 0.5]
    text = ("[bold]2D classes.[/] Each average is the mean of aligned images that show the molecule in a "
            "similar view; sharp ones with protein-like detail are particles, blurred ones or ones showing an "
            "ice or carbon edge collect false picks (real particles per class are counted from the truth). ")
    if junk:
        text += (f"{len(junk)} class(es) are mostly false picks ({sum(r['particles'] for r in junk)} images): "
                 f"those you would deselect before 3D work. ")
    return text + (f"{len(good)} class(es) hold {sum(r['particles'] for r in good)} images, mostly real "
                   f"particles.")


def _class_table(class2d: dict) -> Table:
    view = Table("class", "images", "real particles", "est. resolution")
    for row in class2d["table"]:
        resolution = row.get("resolution_angst")
        view.add_row(str(row["class"]), str(row["particles"]), f"{row['real']:.0%}",
                     f"{resolution:.1f} Å" if resolution is not None else "-")
    return view


def _on_the_fly_text(fly: dict, summary: dict) -> str:
    rounds = fly["rounds"]
    counts = {scheme: sum(1 for r in rounds if r["scheme"] == scheme) for scheme in ("prep", "proc")}
    text = (f"[bold]On the fly.[/] The microscope wrote {fly['movies_written']} movies, the last one complete "
            f"{fly['last_movie_s']:.0f} s after vitrify auto started; the prep scheme ran {counts['prep']} "
            f"round(s) and proc {counts['proc']} as movies became ready")
    if fly.get("behind_s") is not None:
        text += (f"; the last results (round ending at {fly['last_result_s']:.0f} s) came "
                 f"{fly['behind_s']:.0f} s after the last movie")
    stage = fly.get("stage", "?")
    text += f". It ran up to stage {stage}"
    if stage == "3d" and not registry.is_available("relion.refine3d"):
        text += " (vitrify has no 3D refinement job yet)"
    proc = summary.get("schemes", {}).get("proc", {})
    if stage in ("3d", "refine") and "inimodel3d" not in summary.get("jobs", {}) and "min_nr_parts_3d" in proc:
        text += (f"; 3D did not start: the class ranker kept {proc.get('current_nr_parts', 0):.0f} particles, "
                 f"fewer than the {proc['min_nr_parts_3d']:.0f} the proc scheme waits for (min_nr_parts_3d)")
    return text + "."


def _map_text(model: dict, summary: dict) -> str:
    text = (f"[bold]Initial model.[/] The class ranker kept the good 2D classes and the de novo initial model "
            f"was built from {model['particles']} particles ({model['box_px']}³ px at "
            f"{model['pixel_size_angst']:.2f} Å/px). Against the true map (computed from the structure, the "
            f"model aligned onto it{', hand flipped' if model['hand_flipped'] else ''}) the FSC falls to 0.5 at "
            f"{model['fsc_05_angst']:.1f} Å and to 0.143 at {model['fsc_0143_angst']:.1f} Å. "
            f"Open both: {model['chimerax']}")
    return text


_VERDICT = {True: "the truth supports it", False: "[bold red]finer than the truth supports (overstated)[/]",
            None: "not reported"}


def _refined_text(refined: dict) -> str:
    """The refinement's paragraph: what vitrify reported, what the truth supports, the files."""
    gold, post = refined.get("gold_standard_angst"), refined.get("postprocess_angst")
    reported = [f"{gold:.1f} Å by the gold-standard FSC of the two halves (unmasked; "
                f"{_VERDICT[refined.get('gold_standard_honest')]})" if gold is not None else
                "no gold-standard resolution"]
    if post is not None:
        reported.append(f"{post:.1f} Å after post-processing with the automatic solvent mask (B-factor "
                        f"{refined.get('bfactor_angst2') or 0:.0f} Å²; {_VERDICT[refined.get('postprocess_honest')]})")
    ended = f"; it {refined['ended']}" if refined.get("ended") else ""
    poses = refined.get("poses") or {}
    if poses.get("matched"):
        ended += (f"; {poses['within_10_deg']} of the {poses['matched']} particles matched to the truth have a pose "
                  f"within 10° of their true one, median error {poses['median_deg']:.0f}°, up to one rotation "
                  f"of the whole map")
    return (f"[bold]3D refinement.[/] Auto-refine from the initial model used {refined['particles']} particles "
            f"({refined['box_px']}³ px at {refined['pixel_size_angst']:.2f} Å/px{ended}). vitrify reports "
            f"{'; '.join(reported)}. Against the true map (aligned"
            f"{', hand flipped' if refined['hand_flipped'] else ''}) the refined map's FSC falls to 0.5 at "
            f"{refined['fsc_05_angst']:.1f} Å and to 0.143 at {refined['fsc_0143_angst']:.1f} Å; in the true map's "
            f"mask to 0.5 at {refined['masked_fsc_05_angst']:.1f} Å and to 0.143 at "
            f"{refined['masked_fsc_0143_angst']:.1f} Å (a half-map FSC of 0.143 stands for an FSC of 0.5 to the "
            f"truth: the unmasked figure checks the gold-standard one, the masked figure the post-processed one). "
            f"Open them: {refined['chimerax']}")


def _stages_table(stages: list[dict]) -> Table:
    view = Table("stage", "scheme node", "runs", "time s")
    for row in stages:
        view.add_row(row["stage"], row["node"], str(row["runs"]), f"{row['seconds']:.0f}")
    return view


def _rounds_table(fly: dict) -> Table:
    view = Table("scheme", "round", "in", "from s", "to s", "took s", "status")
    for r in fly["rounds"]:
        view.add_row(r["scheme"], str(r["round"]), str(r["n_in"]), f"{r['start_s']:.0f}", f"{r['end_s']:.0f}",
                     f"{r['end_s'] - r['start_s']:.0f}", r["status"])
    return view


def _where_text(summary: dict, project: Path) -> list[str]:
    jobs = summary["jobs"]
    lines = [f"  session (what the microscope wrote): {project.parent / 'session'}; the truth: "
             f"{project.parent / 'microscope' / 'truth.star'}",
             f"  project: {project} (jobs: {', '.join(sorted(jobs.values(), key=lambda j: j.rstrip('/')[-3:]))})"]
    if "class2d" in summary:
        lines.append(f"  2D class gallery: {summary['class2d']['gallery_png']} "
                     f"(averages: {summary['class2d']['classes_mrcs']})")
    proc = summary["schemes"]["proc"]
    lines += [f"  schemes: prep {summary['schemes']['prep']['state']}, proc {proc['state']} at "
              f"{proc['current_node']}; vitrify auto's log: {project / 'Auto' / 'auto.log'}",
              f"  numbers: {project.parent / 'demo_report.json'}, logs: {project.parent / 'logs'}",
              "", "Look at it:", f"  cd {project}",
              "  vitrify dashboard --project .            # the live page: schemes, jobs, figures, classes",
              "  vitrify pipeline --png pipeline.png       # the jobs and how data flowed between them",
              "  vitrify schemer --scheme proc --status    # what each scheme did (add --json for scripts)",
              "  cat acquisition.json                      # what MDCatch read and derived, with sources",
              "  vitrify auto ../session --project .       # goes on with any new movies in the session"]
    return lines


def print_pipeline_report(console: Console, summary: dict) -> None:
    """Print where the results are and what they mean (numbers against the truth)."""
    project = Path(summary["out"]) / "project"
    say = functools.partial(console.print, soft_wrap=True, highlight=False)
    say("\n[bold green]What the automated pipeline found[/] (compared with the simulation's truth)")
    for key, text in (("motion", _motion_text), ("ctf", _ctf_text), ("picking", _picking_text)):
        if key in summary:
            say(text(summary[key]) if key == "motion" else text(summary[key], summary))
        else:
            say(f"[yellow]{key}: no result (the job did not run or failed)[/]")
    if "class2d" in summary:
        console.print(_class_table(summary["class2d"]))
        say(_class_text(summary["class2d"]))
    if "initial_model" in summary:
        say(_map_text(summary["initial_model"], summary))
    if "refined_map" in summary:
        say(_refined_text(summary["refined_map"]))
    if summary.get("stage_times"):
        say("[bold]Time per stage[/] (all rounds; from the schemes' logs):")
        console.print(_stages_table(summary["stage_times"]))
    fly = summary.get("on_the_fly") or {}
    if fly.get("rounds"):
        say(_on_the_fly_text(fly, summary))
        console.print(_rounds_table(fly))
    for job, reason in summary["failed"].items():
        say(f"[bold red]failed:[/] {escape(job)}: {escape(reason)}")
    say("\n[bold]Where the results are[/]")
    for line in _where_text(summary, project):
        say(escape(line))
    steps = ", ".join(f"{t['step']} {t['wall_s']:.0f}/{t['cpu_s']:.0f}" for t in summary["steps"])
    say(f"\n[dim]wall time {summary['wall_s']:.0f} s, CPU time {summary['cpu_s']:.0f} s (all processes); "
        f"per step, wall/CPU s: {steps}[/]")
