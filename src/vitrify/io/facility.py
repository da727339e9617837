"""Facility configuration: one TOML file with what differs between sites, no code edits.

Microscope IDs (EPU ``InstrumentID``, SerialEM D-number or microscope name) map to a name and
Cs; detector models to MTF files per voltage and gain-reference rules; movie and gain file
patterns say where to look. Without a file, :data:`DEFAULTS` apply (Cs 2.7 mm, the value of
Krios, Talos and Glacios). An optional ``[dask]`` section names the batch-queue cluster that
per-micrograph jobs run on with ``--scheduler jobqueue`` (:class:`DaskConfig`; dask-jobqueue).
Format and example: docs/mdcatch.md, docs/scaleout.md.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitrify.io._acq_params import AcquisitionParams, with_value
from vitrify.io.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

#: Environment variable naming the facility file when no ``--facility`` option is given.
ENV_VARIABLE = "VITRIFY_FACILITY_CONFIG"

DEFAULTS: dict[str, Any] = {
    "cs_mm": 2.7,
    "amplitude_contrast": 0.1,
    "movie_patterns": ["*_fractions.tiff", "*_Fractions.tiff", "*_Fractions.mrc", "*_EER.eer",
                       "*.eer", "*.tiff", "*.tif", "*.mrcs", "*.mrc"],
    "gain_patterns": ["*gain*.mrc", "*Gain*.mrc", "*.gain", "*gain*.tiff", "*gain*.tif",
                      "SuperRef_*.mrc", "CountRef_*.mrc", "SuperRef_*.dm4", "CountRef_*.dm4"],
}
_MICROSCOPE_KEYS = {"name", "cs_mm", "cameras"}
_CAMERA_KEYS = {"mtf", "gain_rotation", "gain_flip", "gain_patterns"}
#: batch systems a ``[dask]`` section may name (dask-jobqueue's SLURMCluster, PBSCluster, ...)
DASK_SYSTEMS = ("slurm", "pbs", "sge", "lsf")


@dataclass(frozen=True)
class CameraConfig:
    """Per-detector-model settings: MTF file per voltage (kV as text), gain rotation/flip."""

    mtf: dict[str, str] = field(default_factory=dict)
    gain_rotation: int = 0
    gain_flip: int = 0
    gain_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class MicroscopeConfig:
    """Per-microscope settings: a display name, Cs, SerialEM camera index → detector model."""

    name: str = ""
    cs_mm: float | None = None
    cameras: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DaskConfig:
    """A dask-jobqueue cluster: each batch job runs ``processes`` Dask workers on ``cores`` cores.

    ``system`` is one of :data:`DASK_SYSTEMS`; ``memory`` (``"16GB"``) and ``walltime``
    (``"01:00:00"``) are per batch job; ``gpus`` per batch job becomes the system's usual
    directive (SLURM ``--gres=gpu:N``, PBS ``-l ngpus=N``, SGE ``-l gpu=N``, LSF ``-gpu num=N``);
    ``job_extra`` adds site directives as written; ``interface`` is the network interface the
    scheduler listens on (one the compute nodes reach); ``python`` the interpreter on the nodes.
    """

    system: str = "slurm"
    queue: str = ""
    account: str = ""
    cores: int = 1
    processes: int = 1
    memory: str = "4GB"
    walltime: str = "01:00:00"
    gpus: int = 0
    job_extra: tuple[str, ...] = ()
    interface: str = ""
    python: str = ""


_DASK_KEYS = {f for f in DaskConfig.__dataclass_fields__}


@dataclass(frozen=True)
class FacilityConfig:
    """The whole facility file (or the defaults, with ``path`` None)."""

    path: str | None = None
    defaults: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    microscopes: dict[str, MicroscopeConfig] = field(default_factory=dict)
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    dask: DaskConfig | None = None

    @property
    def label(self) -> str:
        """How sources taken from this configuration are shown."""
        return Path(self.path).name if self.path else "vitrify defaults"

    def camera(self, model: str | None) -> CameraConfig:
        """Settings of a detector model (empty settings if unknown)."""
        return self.cameras.get(model or "", CameraConfig())

    def microscope_name(self, microscope_id: str | None) -> str | None:
        """The facility's name for a microscope ID (None if it has no entry or no name)."""
        scope = self.microscopes.get(microscope_id or "")
        return scope.name or None if scope is not None else None

    def mtf_file(self, model: str | None, voltage_kv: float | None) -> str | None:
        """MTF STAR file for ``model`` at ``voltage_kv``, if the facility gives one."""
        if voltage_kv is None:
            return None
        return self.camera(model).mtf.get(f"{voltage_kv:g}")


def _check_keys(table: dict, allowed: set[str], path: Path, where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown)}", path=path, field=where,
                         expected=", ".join(sorted(allowed)))


def _dask_config(table: dict, path: Path) -> DaskConfig:
    """The ``[dask]`` section, checked: known keys, a known batch system, whole numbers >= 0."""
    _check_keys(table, _DASK_KEYS, path, "[dask]")
    values = dict(table)
    if str(values.get("system", "slurm")) not in DASK_SYSTEMS:
        raise InputError(f"unknown batch system {values['system']!r}", path=path, field="[dask] system",
                         expected=" | ".join(DASK_SYSTEMS))
    for key in ("cores", "processes", "gpus"):
        if key in values and (not isinstance(values[key], int) or values[key] < (0 if key == "gpus" else 1)):
            raise InputError(f"{key} = {values[key]!r}", path=path, field=f"[dask] {key}",
                             expected="a whole number" + (" >= 0" if key == "gpus" else " >= 1"))
    values["job_extra"] = tuple(str(v) for v in values.get("job_extra", ()))
    return DaskConfig(**{k: v if k in ("cores", "processes", "gpus", "job_extra") else str(v)
                         for k, v in values.items()})


def load_facility_config(path: str | Path | None = None) -> FacilityConfig:
    """Read a facility TOML file; ``None`` → ``$VITRIFY_FACILITY_CONFIG`` or the defaults."""
    if path is None:
        path = os.environ.get(ENV_VARIABLE) or None
    if path is None:
        return FacilityConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read: {err}", path=path, expected="a facility TOML file") from err
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"invalid TOML: {err}", path=path) from err
    _check_keys(data, {"defaults", "microscopes", "cameras", "dask"}, path, "top level")
    defaults = dict(DEFAULTS)
    _check_keys(data.get("defaults", {}), set(DEFAULTS), path, "[defaults]")
    defaults.update(data.get("defaults", {}))
    microscopes = {}
    for key, table in data.get("microscopes", {}).items():
        _check_keys(table, _MICROSCOPE_KEYS, path, f"[microscopes.{key}]")
        microscopes[str(key)] = MicroscopeConfig(
            name=str(table.get("name", "")), cs_mm=table.get("cs_mm"),
            cameras={str(k): str(v) for k, v in table.get("cameras", {}).items()})
    cameras = {}
    for key, table in data.get("cameras", {}).items():
        _check_keys(table, _CAMERA_KEYS, path, f"[cameras.{key}]")
        cameras[str(key)] = CameraConfig(
            mtf={str(k): str(v) for k, v in table.get("mtf", {}).items()},
            gain_rotation=int(table.get("gain_rotation", 0)), gain_flip=int(table.get("gain_flip", 0)),
            gain_patterns=tuple(table.get("gain_patterns", ())))
    dask = _dask_config(data["dask"], path) if "dask" in data else None
    return FacilityConfig(str(path), defaults, microscopes, cameras, dask)


def apply_facility(params: AcquisitionParams, config: FacilityConfig) -> AcquisitionParams:
    """Fill what the metadata files lack (Cs) from the facility's microscope entry or defaults.

    Values the files gave are never replaced; each filled value records the configuration
    (file and key) as its source.
    """
    scope = config.microscopes.get(params.microscope_id or "")
    camera = (params.detector or "").removeprefix("camera ")
    if params.detector_model is None and scope is not None and camera in scope.cameras:
        params = with_value(params, "detector_model", scope.cameras[camera],
                            (config.label, f"microscopes.{params.microscope_id}.cameras.{camera}"))
    if params.cs_mm is None:
        if scope is not None and scope.cs_mm is not None:
            params = with_value(params, "cs_mm", float(scope.cs_mm),
                                (config.label, f"microscopes.{params.microscope_id}.cs_mm"))
        else:
            params = with_value(params, "cs_mm", float(config.defaults["cs_mm"]),
                                (config.label, "defaults.cs_mm"))
    return params
