"""The state of a 2D classification: model parameters and per-particle data.

:class:`MlModel` holds what RELION writes to ``model.star`` (references, class
fractions, noise and signal spectra, offset prior, resolution); :class:`ParticleSet`
holds the particles' packed Fourier data, CTFs and their current assignments (what
goes to ``data.star``). Both are plain containers; the algorithms live in
:mod:`~vitrify.ml.expectation`, :mod:`~vitrify.ml.mstep` and :mod:`~vitrify.ml.vdam`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class MlModel:
    """Parameters of the regularised likelihood model (2D).

    Attributes
    ----------
    refs
        ``(K, n, n)`` float32 real-space references, centred.
    pdf_class
        ``(K,)`` float64 class fractions (sum 1).
    sigma2
        ``(G, n//2+1)`` float64 noise power per optics group and shell (RELION scale:
        transforms divided by ``n**2``, variance per real/imaginary component).
    tau2
        ``(K, n//2+1)`` float64 reference power per shell (``|F|^2 / 2``).
    data_vs_prior
        ``(K, n//2+1)`` float64 SSNR estimate per class and shell.
    sigma2_offset_px
        Variance of the Gaussian offset prior, px^2.
    tau2_fudge
        Current regularisation factor T.
    current_radius
        Fourier window radius (shells) of the next E-step.
    pixel_size_angst, pad
        Image pixel size and padding factor of the template grids.
    """

    refs: torch.Tensor
    pdf_class: torch.Tensor
    sigma2: torch.Tensor
    tau2: torch.Tensor
    data_vs_prior: torch.Tensor
    sigma2_offset_px: float
    tau2_fudge: float
    current_radius: int
    pixel_size_angst: float
    pad: int = 2
    log_likelihood: float = 0.0
    ave_pmax: float = 0.0
    class_accuracy_psi_deg: torch.Tensor | None = None
    class_accuracy_offset_px: torch.Tensor | None = None

    @property
    def n_classes(self) -> int:
        """K."""
        return int(self.refs.shape[0])

    @property
    def box_px(self) -> int:
        """n."""
        return int(self.refs.shape[-1])

    def resolution_angst(self, shell: int) -> float:
        """Resolution of Fourier shell ``shell`` in Å (inf for shell 0)."""
        return float("inf") if shell <= 0 else self.box_px * self.pixel_size_angst / shell


@dataclass
class ParticleSet:
    """Particles prepared for the engine, and their current assignments.

    Attributes
    ----------
    ft
        ``(N, P)`` complex64 packed transforms (window of the largest radius), divided
        by ``n**2``, masked with the particle-diameter circle.
    ctf
        ``(N, P)`` float32 packed CTFs (ones when CTF correction is off).
    group
        ``(N,)`` long optics group index (0-based).
    n_groups
        Number of optics groups G.
    offset_px
        ``(N, 2)`` float32 current (x, y) offsets, pixels.
    """

    ft: torch.Tensor
    ctf: torch.Tensor
    group: torch.Tensor
    n_groups: int
    offset_px: torch.Tensor
    class_index: torch.Tensor = field(default=None)  # (N,) long, 0-based
    psi_deg: torch.Tensor = field(default=None)      # (N,) float32
    pmax: torch.Tensor = field(default=None)         # (N,) float32
    n_significant: torch.Tensor = field(default=None)  # (N,) long
    log_likelihood: torch.Tensor = field(default=None)  # (N,) float64
    allowed: torch.Tensor | None = None  # (N, K) bool: classes each particle may take (None: all)

    def __post_init__(self) -> None:
        n, dev = self.ft.shape[0], self.ft.device
        if self.class_index is None:
            self.class_index = torch.zeros(n, dtype=torch.long, device=dev)
        if self.psi_deg is None:
            self.psi_deg = torch.zeros(n, device=dev)
        if self.pmax is None:
            self.pmax = torch.zeros(n, device=dev)
        if self.n_significant is None:
            self.n_significant = torch.zeros(n, dtype=torch.long, device=dev)
        if self.log_likelihood is None:
            self.log_likelihood = torch.zeros(n, dtype=torch.float64, device=dev)

    @property
    def n_particles(self) -> int:
        """N."""
        return int(self.ft.shape[0])
