"""On-the-fly benchmark: whether ``vitrify auto`` keeps up with a microscope and how far behind it ends.

A simulated session (``--movies`` movies of CFTR) is written into a session folder one movie every
``--interval`` seconds (each in four pieces, as a detector writes) while ``vitrify auto`` processes
it (prep every time more movies are ready; proc every ``--batch`` micrographs and once more when
the session goes quiet). Every ``--sample`` seconds the benchmark counts the movies written,
linked as ready, motion-corrected and CTF-fitted; the queue is written minus CTF-fitted. It prints
that table, the scheme rounds, and the time from the last movie to the last CTF fit and to the last
2D classes; ``--png`` plots the counts and the queue over time with the rounds (``--json`` keeps the
samples). Run it under the shared lock: ``nice -n 5 flock -s /tmp/vitrify-bench.lock python
benchmarks/onthefly.py`` (``flock -x`` for figures measured on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _vitrify(*args: str) -> list[str]:
    return [sys.executable, "-m", "vitrify", "--quiet", *args]


def _count(project: Path, pattern: str) -> int:
    return len(list(project.glob(pattern)))


def _sample(out: Path, written: list[float], start: float) -> dict:
    project = out / "project"
    ready = _count(project, "Auto/Ready/Movies/mov_?????.tiff")
    return {"t_s": time.time() - start, "written": len(written), "ready": ready,
            "motion": _count(project, "MotionCorr/job*/**/mov_?????.mrc"),
            "ctf": _count(project, "CtfFind/job*/**/mov_?????.ctf")}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movies", type=int, default=50)
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between movies")
    parser.add_argument("--size", type=int, default=512, help="movie width = height (px)")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--particles", type=int, default=12, help="per movie")
    parser.add_argument("--batch", type=int, default=10, help="vitrify auto --batch")
    parser.add_argument("--until", default="2d")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between counts")
    parser.add_argument("--out", type=Path, default=Path("/tmp/vitrify_onthefly"))
    parser.add_argument("--png", type=Path, default=None, help="plot of the queue over time (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="samples and rounds (JSON)")
    return parser.parse_args()


def _simulate(args: argparse.Namespace) -> float:
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "session").mkdir(parents=True)
    began = time.perf_counter()
    subprocess.run(_vitrify("simulate", "movies", "--structure", "cftr", "--n", str(args.movies), "--size",
                            str(args.size), "--frames", str(args.frames), "--particles", str(args.particles),
                            "--seed", "1", "--out", str(args.out / "microscope")), check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def _auto(args: argparse.Namespace) -> subprocess.Popen:
    sets = {"proc__select_mics__select_maxval": "15", "proc__class2d__nr_classes": "10",
            "proc__class2d__nr_iter_grad": "40", "proc__class2d__nr_threads": "2"}
    command = _vitrify("auto", str(args.out / "session"), "--project", str(args.out / "project"),
                       "--particle-diameter", "170", "--until", args.until, "--idle", "0.5", "--batch",
                       str(args.batch), "--stable", "1", "--poll", "0.5",
                       *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")])
    log = open(args.out / "auto.out", "w")   # noqa: SIM115 - open while the child runs
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _print_samples(samples: list[dict], every_s: float) -> None:
    print("| t (s) | written | ready | motion-corrected | CTF-fitted | queue (written - CTF) |")
    print("|---|---|---|---|---|---|")
    shown = -every_s
    for row in samples:
        if row["t_s"] - shown >= every_s or row is samples[-1]:
            shown = row["t_s"]
            print(f"| {row['t_s']:.0f} | {row['written']} | {row['ready']} | {row['motion']} | {row['ctf']} | "
                  f"{row['written'] - row['ctf']} |")


def _print_rounds(project: Path, start: float, written: list[float]) -> None:
    from vitrify.pipeline.auto import read_log, rounds_from_log

    rounds = rounds_from_log(read_log(project))
    print("\n| scheme | round | in | from (s) | to (s) | status |\n|---|---|---|---|---|---|")
    for r in rounds:
        print(f"| {r['scheme']} | {r['round']} | {r['n_in']} | {r['start'] - start:.0f} | "
              f"{r.get('end', float('nan')) - start:.0f} | {r.get('status', 'unfinished')} |")
    last_movie = max(written) - start
    for scheme, what in (("prep", "CTF fit"), ("proc", "2D classes")):
        ends = [r["end"] - start for r in rounds if r["scheme"] == scheme and r.get("status") == "succeeded"]
        if ends:
            print(f"last {what}: {max(ends):.0f} s, {max(ends) - last_movie:.0f} s after the last movie "
                  f"({last_movie:.0f} s)")


def _relative_rounds(project: Path, start: float) -> list[dict]:
    from vitrify.pipeline.auto import read_log, rounds_from_log

    return [{**r, "start": r["start"] - start, **({"end": r["end"] - start} if "end" in r else {})}
            for r in rounds_from_log(read_log(project))]


def _plot(path: Path, samples: list[dict], rounds: list[dict], written: list[float], title: str) -> None:
    """Counts over time (top) and the queue, movies written but not yet CTF-fitted (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["t_s"] for row in samples]
    figure, (counts, queue) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 2))
    for key, label in (("written", "written by the microscope"), ("ready", "ready (stable, readable)"),
                       ("motion", "motion-corrected"), ("ctf", "CTF-fitted")):
        counts.step(t, [row[key] for row in samples], where="post", label=label)
    for lane, scheme in enumerate(("prep", "proc")):
        for r in (r for r in rounds if r["scheme"] == scheme and "end" in r):
            counts.broken_barh([(r["start"], r["end"] - r["start"])], (-6 - 4 * lane, 3),
                               color=("tab:gray", "tab:purple")[lane], alpha=0.6)
        counts.text(-0.01, -4.5 - 4 * lane, f"{scheme} rounds", va="center", ha="right", fontsize=8,
                    transform=counts.get_yaxis_transform())
    counts.set_yticks([tick for tick in counts.get_yticks() if 0 <= tick <= len(written)])
    counts.set_ylabel("movies")
    counts.legend(loc="upper left", fontsize=8)
    counts.set_title(title, fontsize=9)
    queue.step(t, [row["written"] - row["ctf"] for row in samples], where="post", color="tab:red")
    if written:
        queue.axvline(max(written), color="k", ls=":", lw=1)
    queue.set_ylabel("queue (written - CTF-fitted)")
    queue.set_xlabel("seconds since vitrify auto started (dotted: last movie written)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    """Run the benchmark and print its tables."""
    from vitrify.sim.replay import replay_in_background

    args = _arguments()
    simulate_s = _simulate(args)
    start, written = time.time(), []
    auto = _auto(args)
    microscope = replay_in_background(args.out / "microscope", args.out / "session", interval_s=args.interval,
                                      chunks=4, chunk_s=0.25, wrote=lambda path, when: written.append(when))
    samples = []
    while auto.poll() is None:
        samples.append(_sample(args.out, written, start))
        time.sleep(args.sample)
    microscope.join()
    samples.append(_sample(args.out, written, start))
    print(f"{args.movies} movies of {args.size}² px, {args.frames} frames, {args.particles} particles, one every "
          f"{args.interval:g} s; simulated in {simulate_s:.0f} s; vitrify auto exit {auto.returncode}, "
          f"{samples[-1]['t_s']:.0f} s in all\n")
    _print_samples(samples, every_s=max(10.0, args.sample))
    _print_rounds(args.out / "project", start, written)
    rounds = _relative_rounds(args.out / "project", start)
    if args.json is not None:
        args.json.write_text(json.dumps({"samples": samples, "rounds": rounds,
                                         "written_s": [w - start for w in written]}, indent=1) + "\n")
    if args.png is not None:
        _plot(args.png, samples, rounds, [w - start for w in written],
              f"vitrify auto --until {args.until}: {args.movies} movies of {args.size}² px, one every "
              f"{args.interval:g} s")
        print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
