"""Outputs of the ``postprocess`` job: maps, ``postprocess.star`` (RELION's tables) and the FSC/Guinier PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.jobs._preprocess_io import write_output_nodes

NODES = (("postprocess.mrc", "DensityMap.mrc.relion.postprocess"),
         ("postprocess_masked.mrc", "DensityMap.mrc.relion.postprocess.masked"),
         ("postprocess.star", "ProcessData.star.relion.postprocess"),
         ("postprocess_fsc.png", "LogFile.png.relion.postprocess"))


def _np(curve) -> np.ndarray:
    return curve.detach().double().cpu().numpy()


def general_block(options, half2: str, result: dict) -> dict:
    """RELION's ``data_general`` of postprocess.star."""
    return {"rlnFinalResolution": result["resolution"], "rlnBfactorUsedForSharpening": result["bfactor"],
            "rlnUnfilteredMapHalf1": options.half1_map, "rlnUnfilteredMapHalf2": half2,
            "rlnMaskName": options.mask, "rlnRandomiseFrom": result["n"] * result["pixel"] / result["randomise_from"],
            "rlnParticleBoxFractionSolventMask": result["mask_fraction"],
            "rlnFittedSlopeGuinierPlot": result["fit_slope"],
            "rlnFittedInterceptGuinierPlot": result["fit_intercept"],
            "rlnCorrelationFitGuinierPlot": result["fit_correlation"]}


def fsc_table(result: dict) -> pd.DataFrame:
    """RELION's ``data_fsc`` loop (shells 0 .. n/2)."""
    n, pixel = result["n"], result["pixel"]
    shells = np.arange(n // 2 + 1)
    corrected = _np(result["corrected"])
    fraction = result["mask_fraction"]
    particle = corrected / np.where(corrected + (1 - corrected) * fraction != 0,
                                    corrected + (1 - corrected) * fraction, 1.0)
    return pd.DataFrame({
        "rlnSpectralIndex": shells, "rlnResolution": shells / (n * pixel),
        "rlnAngstromResolution": np.where(shells > 0, n * pixel / np.maximum(shells, 1), 999.0),
        "rlnFourierShellCorrelationCorrected": corrected,
        "rlnFourierShellCorrelationParticleMaskFraction": particle,
        "rlnFourierShellCorrelationUnmaskedMaps": _np(result["unmasked"]),
        "rlnFourierShellCorrelationMaskedMaps": _np(result["masked"]),
        "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps": _np(result["randomized"])})


def guinier_table(result: dict) -> pd.DataFrame:
    """RELION's ``data_guinier`` loop: ln amplitudes against resolution² (shells 1 .. n/2)."""
    n, pixel = result["n"], result["pixel"]
    s2 = (np.arange(n // 2 + 1) / (n * pixel)) ** 2
    columns = {"rlnResolutionSquared": s2, "rlnLogAmplitudesOriginal": _np(result["guinier_original"])}
    if "guinier_mtf" in result:
        columns["rlnLogAmplitudesMTFCorrected"] = _np(result["guinier_mtf"])
    columns["rlnLogAmplitudesWeighted"] = _np(result["guinier_weighted"])
    columns["rlnLogAmplitudesSharpened"] = _np(result["guinier_sharpened"])
    columns["rlnLogAmplitudesIntercept"] = result["fit_intercept"] + result["fit_slope"] * s2
    table = pd.DataFrame(columns).iloc[1:]
    finite = np.isfinite(table.to_numpy(float)).all(axis=1)
    return table[finite].reset_index(drop=True)


def write_png(path: Path, result: dict, fsc: pd.DataFrame, guinier: pd.DataFrame) -> None:
    """FSC curves (left) and the Guinier plot with the fitted line (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitrify.io.atomic import atomic_path

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = fsc["rlnResolution"]
    for label, name in (("corrected", "rlnFourierShellCorrelationCorrected"),
                        ("unmasked", "rlnFourierShellCorrelationUnmaskedMaps"),
                        ("masked", "rlnFourierShellCorrelationMaskedMaps"),
                        ("phase-randomised masked", "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps")):
        left.plot(x, fsc[name], label=label)
    left.axhline(0.143, color="grey", lw=0.8, ls="--")
    left.set(xlabel="resolution (1/Å)", ylabel="FSC", ylim=(-0.1, 1.05),
             title=f"FSC 0.143: {result['resolution']:.2f} Å")
    left.legend(fontsize=7)
    s2 = guinier["rlnResolutionSquared"]
    for name in [c for c in guinier.columns if c.startswith("rlnLogAmplitudes")]:
        right.plot(s2, guinier[name], label=name.removeprefix("rlnLogAmplitudes"))
    right.set(xlabel="resolution² (1/Å²)", ylabel="ln(amplitude)",
              title=f"Guinier: B = {result['bfactor']:.1f} Å²")
    right.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def write_outputs(job_dir: Path, options, half2: str, result: dict, sharpened, mask) -> Path:
    """Write the maps, postprocess.star, the PNG and the output nodes; return the STAR path."""
    from vitrify.io.mrc import write_mrc
    from vitrify.io.star import write_star

    pixel = result["pixel"]
    write_mrc(job_dir / "postprocess.mrc", sharpened.float().numpy(), pixel)
    write_mrc(job_dir / "postprocess_masked.mrc", (sharpened * mask).float().numpy(), pixel)
    fsc, guinier = fsc_table(result), guinier_table(result)
    star = job_dir / "postprocess.star"
    write_star(star, {"general": general_block(options, half2, result), "fsc": fsc, "guinier": guinier})
    write_png(job_dir / "postprocess_fsc.png", result, fsc, guinier)
    write_output_nodes(job_dir, [(job_dir / name, label) for name, label in NODES])
    return star
