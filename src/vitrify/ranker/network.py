"""The ranker network (RELION class ranker v1.0 layout, §8) and its versioned, checksummed weights.

A CNN reads the 64 x 64 class average (3 blocks of 3x3 convolutions, the last of each strided,
to 128 x 8 x 8, then Linear(8192 -> 48)); its 48 image features are joined with the 24
normalised hand-made features, then Linear(72 -> 48) -> ReLU -> Linear(48 -> 1). The score is
that output clamped to [0, 1] at inference (training sees the raw value, as RELION's).

Weights are a plain ``state_dict`` saved with ``torch.save`` and loaded with
``weights_only=True`` (no code is ever executed from a file), next to a JSON manifest
``<name>.json`` holding the format version, the architecture flags and the file's SHA-256; a
missing, altered or incompatible file is an :class:`InputError`. The shipped model lives in
``vitrify/ranker/weights/``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from vitrify.errors import InputError

FORMAT_VERSION = 1
N_FEATURES = 24
IMAGE_PX = 64
DEFAULT_WEIGHTS = "class_ranker_v1.pt"
#: normalised features are capped at +-10 (a class without a resolution estimate has one of ~80)
FEATURE_CLAMP = 10.0


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture switches: ``use_features=False`` zeroes the feature input (images only)."""

    use_images: bool = True
    use_features: bool = True
    dropout: float = 0.3
    #: feature indices zeroed at training and inference (RELION v1.0 masked the granulo ones)
    masked_features: tuple[int, ...] = ()


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class RankerNet(nn.Module):
    """Scores classes from ``(k, 1, 64, 64)`` images and ``(k, 24)`` features -> ``(k, 1)``."""

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config or NetworkConfig()
        p = self.config.dropout
        blocks = []
        for c_in, c in ((1, 16), (32, 32), (64, 64)):  # 64 -> 32 -> 16 -> 8 px
            blocks += [_conv(c_in, c), nn.ReLU(), nn.Dropout(p), _conv(c, c), nn.ReLU(),
                       _conv(c, 2 * c, stride=2), nn.Dropout(p)]
        self.cnn = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * 8 * 8, 48))
        self.head = nn.Sequential(nn.Dropout(p), nn.Linear(48 + N_FEATURES, 48), nn.ReLU(), nn.Dropout(p),
                                  nn.Linear(48, 1))
        mask = torch.ones(N_FEATURES)
        mask[list(self.config.masked_features)] = 0.0
        if not self.config.use_features:
            mask.zero_()
        self.register_buffer("feature_mask", mask, persistent=False)

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Raw scores ``(k, 1)`` of images ``(k, 1, 64, 64)`` and features ``(k, 24)``."""
        x = self.cnn(images) if self.config.use_images else images.new_zeros(images.shape[0], 48)
        features = features.clamp(-FEATURE_CLAMP, FEATURE_CLAMP) * self.feature_mask  # z-scores: outliers capped
        return self.head(torch.cat([x, features], dim=1))


def standardise_images(images: torch.Tensor) -> torch.Tensor:
    """Per-image zero mean, unit std ``(k, 64, 64)`` -> ``(k, 1, 64, 64)``: our class averages'
    scale depends on the particles' normalisation, so the CNN sees their shape only (the raw
    intensities reach the network through the features)."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return ((images - mean) / std)[:, None]


def score_classes(net: RankerNet, images: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Scores in [0, 1] ``(k,)`` of CNN inputs ``(k, 64, 64)`` and feature vectors ``(k, 24)``."""
    if images.shape[0] == 0:
        return torch.zeros(0)
    net.eval()
    with torch.no_grad():
        out = net(standardise_images(images.float()), vectors.float())[:, 0]
    return out.clamp(0.0, 1.0)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_model(net: RankerNet, path: str | Path, info: dict | None = None) -> Path:
    """Write ``path`` (state_dict) and ``path.json`` (version, config, sha256, ``info``); returns path."""
    from vitrify.io.atomic import atomic_path, atomic_write

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    manifest = {"format_version": FORMAT_VERSION, "config": asdict(net.config), "sha256": sha256_of(path),
                "info": info or {}}
    atomic_write(manifest_path(path), json.dumps(manifest, indent=1) + "\n")
    return path


def manifest_path(path: Path) -> Path:
    """The manifest beside a weights file: ``model.pt`` -> ``model.pt.json``."""
    return path.with_name(path.name + ".json")


def default_weights_path() -> Path:
    """The shipped weights inside the installed package."""
    return Path(str(resources.files("vitrify.ranker") / "weights" / DEFAULT_WEIGHTS))


def load_model(path: str | Path | None = None) -> tuple[RankerNet, dict]:
    """The network from ``path`` (default: the shipped weights) and its manifest.

    Raises :class:`InputError` for a missing file or manifest, a checksum that does not match, an
    unknown format version or weights that do not fit the network.
    """
    path = Path(path) if path else default_weights_path()
    meta_path = manifest_path(path)
    if not path.is_file():
        raise InputError("ranker weights not found", path=path, field="--model",
                         expected="a model written by `vitrify class-ranker train`")
    try:
        manifest = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        raise InputError("ranker weights have no readable manifest", path=meta_path, field="--model",
                         expected=f"{meta_path.name} written beside the weights") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"ranker weights of format {manifest.get('format_version')!r}", path=meta_path,
                         field="format_version", expected=str(FORMAT_VERSION))
    if sha256_of(path) != manifest.get("sha256"):
        raise InputError("ranker weights are corrupt (checksum mismatch)", path=path, field="sha256",
                         expected=f"sha256 {manifest.get('sha256')}")
    try:
        config = NetworkConfig(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in manifest.get("config", {}).items()})
        net = RankerNet(config)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - any unreadable weights file is the user's input problem
        raise InputError(f"ranker weights cannot be loaded ({type(err).__name__})", path=path,
                         field="--model", expected="weights of vitrify's ranker network") from None
    net.eval()
    return net, manifest
