"""Label the jobs of ``benchmarks/ranker_data.py`` from their ground truth and train the ranker.

Steps (each job's labels and inputs are cached in ``<job>/ranker_cache.npz``, its targets written
to ``<job>/Class2D/class_targets.star`` so that ``vitrify class-ranker train`` reads them too):

1. label every complete job (:func:`vitrify.ranker.labels.label_job`);
2. split: ``val*`` jobs (structures never used in training) are the held-out test set; of the
   ``trn*`` jobs every ``--val-every``-th is a validation job (whole jobs held out) used to pick the
   default threshold; the rest train;
3. train with and without the hand-made features, report MSE on validation and held-out jobs;
4. ``--ship``: write the model trained with features (on the training jobs only, so that the
   validation jobs still choose the default threshold honestly) into the package
   (``src/vitrify/ranker/weights/class_ranker_v1.pt`` + manifest).

Usage::

    nice -n 5 flock -s /tmp/vitrify-bench.lock python benchmarks/ranker_train.py --root ranker_data [--ship]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "vitrify" / "ranker" / "weights" / "class_ranker_v1.pt"


def optimiser_of(job: Path) -> Path:
    """The last iteration's optimiser.star of a generated job."""
    return sorted((job / "Class2D").glob("run_it*_optimiser.star"))[-1]


def cache_job(job: Path) -> dict:
    """Inputs, labels and per-class counts of one job (computed once, then read from the cache)."""
    from vitrify.io.star import write_star
    from vitrify.ranker.inputs import class_inputs, read_class2d_job
    from vitrify.ranker.labels import label_job

    cache = job / "ranker_cache.npz"
    if cache.is_file():
        return dict(np.load(cache))
    class2d = read_class2d_job(optimiser_of(job))
    inputs = class_inputs(class2d)
    labels = label_job(class2d, inputs, job / "sim")
    assigned = class2d.data.data["rlnClassNumber"].astype(int).to_numpy()
    data = {"images": inputs.images.numpy(), "vectors": inputs.vectors, "targets": labels.target.astype(np.float32),
            "purity": labels.purity, "agreement": labels.agreement, "n_real": labels.n_real,
            "n_junk": labels.n_junk, "class_numbers": inputs.class_numbers,
            "resolution": np.array([f["rlnEstimatedResolution"] for f in inputs.features]),
            "n_total_real": np.asarray(int(labels.n_real.sum() + _unranked_real(job, assigned, inputs))),
            "job_quality": np.asarray(labels.job_quality)}
    write_star(job / "Class2D" / "class_targets.star",
               pd.DataFrame({"rlnClassNumber": inputs.class_numbers, "rlnClassScore": labels.target,
                             "vtfPurity": labels.purity, "vtfAgreement": labels.agreement}))
    np.savez(cache, **data)
    return data


def _unranked_real(job: Path, assigned: np.ndarray, inputs) -> int:
    """Real particles in classes that were not ranked (n_k <= 10): never selectable, still counted."""
    from vitrify.io.star import read_star

    real = read_star(job / "sim" / "truth.star")["particles"]["vtfMapIndex"].to_numpy() > 0
    ranked = np.isin(assigned, inputs.class_numbers)
    return int((real & ~ranked).sum())


def complete_jobs(root: Path) -> list[Path]:
    """Generated jobs whose 2D run finished."""
    return sorted(p.parent for p in root.glob("*/spec.json"))


def to_set(jobs: list[Path], caches: dict[Path, dict]):
    """A :class:`vitrify.ranker.train.TrainingSet` of the cached jobs."""
    from vitrify.ranker.train import TrainingSet

    parts = [caches[j] for j in jobs]
    return TrainingSet(torch.as_tensor(np.concatenate([p["images"] for p in parts])),
                       torch.as_tensor(np.concatenate([p["vectors"] for p in parts])),
                       torch.as_tensor(np.concatenate([p["targets"] for p in parts])),
                       np.concatenate([np.full(len(p["targets"]), i) for i, p in enumerate(parts)]),
                       tuple(j.name for j in jobs))


def split(jobs: list[Path], val_every: int) -> tuple[list[Path], list[Path], list[Path]]:
    """(train, validation, held-out test) jobs."""
    trn = [j for j in jobs if j.name.startswith("trn")]
    test = [j for j in jobs if j.name.startswith("val")]
    val = trn[val_every - 1::val_every]
    return [j for j in trn if j not in val], val, test


def main(argv: list[str] | None = None) -> None:
    """Label, split, train with and without features, optionally ship (module docstring)."""
    from vitrify.ranker.network import NetworkConfig, save_model
    from vitrify.ranker.train import TrainSettings, mean_squared_error, train_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--ship", action="store_true", help="retrain on train + validation and write the weights")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    jobs = complete_jobs(args.root)
    caches = {j: cache_job(j) for j in jobs}
    train, val, test = split(jobs, args.val_every)
    sets = {name: to_set(js, caches) for name, js in (("train", train), ("val", val), ("test", test)) if js}
    report = {name: {"jobs": len(js), "classes": len(sets[name]) if name in sets else 0}
              for name, js in (("train", train), ("val", val), ("test", test))}
    print(json.dumps(report), flush=True)
    settings = TrainSettings(epochs=args.epochs, learning_rate=args.lr)
    configs = (("with_features", NetworkConfig(dropout=args.dropout)),
               ("images_only", NetworkConfig(dropout=args.dropout, use_features=False)))
    for label, config in configs:
        start = time.time()
        net, history = train_model(sets["train"], config, settings, sets.get("val"))
        report[label] = {name: mean_squared_error(net, s) for name, s in sets.items()}
        report[label]["train_seconds"] = time.time() - start
        print(label, json.dumps(report[label]), flush=True)
        if args.ship and label == "with_features":
            info = {"trained_on": {"jobs": len(train), "classes": len(sets["train"]),
                                   "validation_jobs": len(val), "validation_classes": report["val"]["classes"],
                                   "structures_held_out": sorted({j.name.split("_", 2)[2] for j in test})},
                    "epochs": args.epochs, "learning_rate": args.lr, "train_loss": history[-1]["train_loss"],
                    "mse": report[label],
                    "made_by": "benchmarks/ranker_train.py"}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            save_model(net, args.out, info)
            print("shipped", args.out, flush=True)
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
