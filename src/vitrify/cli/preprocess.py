"""Preprocessing commands: ``vitrify import | motioncorr | ctffind | autopick | extract | select``.

Each command parses its options into the job's ``Options`` and runs the job with
:func:`vitrify.jobs.base.run_job` in ``--o`` (run.log and exit markers included); an
``--o JobType/jobNNN`` in the current directory makes it a pipeline job
(:mod:`vitrify.cli._record`).
Heavy modules are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _run(module_name: str, options: object, out: Path) -> object:
    from vitrify.cli._record import run_command_job

    return run_command_job(module_name, options, out)


def _ctffind(app: typer.Typer) -> None:
    @app.command("ctffind")
    def ctffind(
        i: str = typer.Option(..., "--i", help="micrographs.star (motion-corrected or imported)."),
        o: Path = typer.Option(..., "--o", help="Output job directory."),
        box: int = typer.Option(512, "--box", help="FFT box for the power spectrum (px)."),
        resmin: float = typer.Option(30.0, "--resmin", help="Lowest resolution fitted (Å)."),
        resmax: float = typer.Option(5.0, "--resmax", help="Highest resolution fitted (Å)."),
        dfmin: float = typer.Option(5000.0, "--dfmin", help="Smallest defocus searched (Å)."),
        dfmax: float = typer.Option(50000.0, "--dfmax", help="Largest defocus searched (Å)."),
        dfstep: float = typer.Option(500.0, "--dfstep", help="Defocus step of the search (Å)."),
        phase_shift: bool = typer.Option(False, "--phase-shift", help="Also fit a phase-plate shift."),
        use_dw: bool = typer.Option(False, "--use-dw", help="Fit the dose-weighted sums."),
        no_png: bool = typer.Option(False, "--no-diagnostics", help="No .ctf/.png diagnostics."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        use_ctffind: bool = typer.Option(False, "--use-ctffind", help="Run an external CTFFIND4 instead."),
        ctffind_exe: str = typer.Option("", "--ctffind-exe", help="CTFFIND4 executable (default: on the PATH)."),
    ) -> None:
        """Estimate the CTF of each micrograph → DIR/micrographs_ctf.star."""
        from vitrify.jobs.ctffind import Options
        from vitrify.preprocess.ctf_fit import CtfSearch

        search = CtfSearch(tile_px=box, resolution_min_angst=resmin, resolution_max_angst=resmax,
                           defocus_min_angst=dfmin, defocus_max_angst=dfmax, defocus_step_angst=dfstep,
                           do_phase_shift=phase_shift)
        out = _run("ctffind", Options(i, search, not use_dw, not no_png, device, use_ctffind=use_ctffind,
                                      ctffind_exe=ctffind_exe), o)
        typer.echo(f"wrote {out}")


def _autopick(app: typer.Typer) -> None:
    @app.command("autopick")
    def autopick(
        i: str = typer.Option(..., "--i", help="micrographs(_ctf).star."),
        o: Path = typer.Option(..., "--o", help="Output job directory."),
        method: str = typer.Option("log", "--method", help="log | template | topaz."),
        dmin: float = typer.Option(150.0, "--log-diameter-min", help="Smallest particle diameter (Å)."),
        dmax: float = typer.Option(180.0, "--log-diameter-max", help="Largest particle diameter (Å)."),
        adjust: float = typer.Option(0.0, "--log-adjust-threshold",
                                     help="σ units; negative picks more, positive fewer."),
        upper: float = typer.Option(999.0, "--log-upper-threshold", help="Drop picks above this (σ)."),
        lowpass: float = typer.Option(20.0, "--log-lowpass", help="Low-pass before picking (Å)."),
        invert: bool = typer.Option(False, "--log-invert", help="Particles are white on the micrographs."),
        references: str = typer.Option("", "--references",
                                       help="Template picking: class averages (.mrcs or class_averages.star)."),
        ref_angpix: float = typer.Option(-1.0, "--ref-angpix", help="Reference pixel size (Å; -1: header)."),
        diameter: float = typer.Option(-1.0, "--diameter",
                                       help="Template picking: particle diameter (Å; -1: 0.75 x reference box)."),
        psi_step: float = typer.Option(10.0, "--psi-step", help="Template picking: in-plane step (degrees)."),
        template_adjust: float = typer.Option(0.0, "--template-adjust-threshold",
                                              help="Template picking: σ above the default threshold (5 σ)."),
        topaz_model: str = typer.Option("resnet16_u64", "--topaz-model", help="Topaz pretrained model."),
        topaz_diameter: float = typer.Option(100.0, "--topaz-diameter", help="Particle diameter for Topaz (Å)."),
        topaz_threshold: float = typer.Option(-3.0, "--topaz-threshold", help="Topaz score threshold."),
        n_png: int = typer.Option(3, "--png", help="Micrographs with a PNG overlay of the picks."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    ) -> None:
        """Pick particles → per-micrograph coordinate STAR files + DIR/autopick.star."""
        from vitrify.jobs.autopick import Options
        from vitrify.preprocess.picking import LogPickOptions
        from vitrify.preprocess.template_pick import TemplatePickOptions

        log = LogPickOptions(dmin, dmax, lowpass_angst=lowpass, invert=invert, threshold_adjust=adjust,
                             upper_threshold=upper)
        template = TemplatePickOptions(diameter if diameter > 0 else -1.0, psi_step_deg=psi_step,
                                       invert=invert, threshold_adjust=template_adjust)
        options = Options(i, method, log, n_png, topaz_model=topaz_model, topaz_diameter_angst=topaz_diameter,
                          topaz_threshold=topaz_threshold, references=references,
                          reference_pixel_angst=ref_angpix, template=template, device=device)
        out = _run("autopick", options, o)
        typer.echo(f"wrote {out}")


def _extract(app: typer.Typer) -> None:
    @app.command("extract")
    def extract(
        i: str = typer.Option(..., "--i", help="micrographs(_ctf).star."),
        o: Path = typer.Option(..., "--o", help="Output job directory."),
        coords: str = typer.Option("", "--coords", help="autopick.star listing coordinate files."),
        reextract: str = typer.Option("", "--reextract", help="particles.star with refined origins."),
        box: int = typer.Option(..., "--box", help="Box size in micrograph pixels (even)."),
        rescale: int = typer.Option(0, "--rescale", help="Rescale to this box (px, even; 0 = no)."),
        float16: bool = typer.Option(False, "--float16", help="Write stacks as MRC mode 12."),
        no_norm: bool = typer.Option(False, "--no-norm", help="Do not normalise."),
        no_invert: bool = typer.Option(False, "--no-invert", help="Keep the micrograph contrast."),
        bg_diameter: float = typer.Option(-1.0, "--bg-diameter", help="Background circle (output px; -1 = RELION default)."),
        white_dust: float = typer.Option(-1.0, "--white-dust", help="σ for white dust removal (-1 off)."),
        black_dust: float = typer.Option(-1.0, "--black-dust", help="σ for black dust removal (-1 off)."),
        min_fom: float = typer.Option(None, "--min-fom", help="Drop picks with a lower figure of merit."),
        reset_offsets: bool = typer.Option(False, "--reset-offsets", help="Re-extraction: zero origins."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    ) -> None:
        """Extract particles → DIR/particles.star and per-micrograph .mrcs stacks."""
        from vitrify.jobs.extract import Options
        from vitrify.preprocess.extraction import ExtractOptions

        extract_options = ExtractOptions(box_px=box, rescale_px=rescale or None, normalise=not no_norm,
                                         invert_contrast=not no_invert,
                                         bg_radius_px=bg_diameter / 2 if bg_diameter > 0 else None,
                                         white_dust_sigma=white_dust, black_dust_sigma=black_dust)
        options = Options(i, coords, extract_options, float16, min_fom, reextract, reset_offsets, device)
        out = _run("extract", options, o)
        typer.echo(f"wrote {out}")


def _import(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        i: str = typer.Option(..., "--i", help="Glob pattern of the files, e.g. 'Movies/*.tiff'."),
        o: Path = typer.Option(..., "--o", help="Output job directory."),
        micrographs: bool = typer.Option(False, "--micrographs", help="Single-frame micrographs, not movies."),
        angpix: float = typer.Option(..., "--angpix", help="Pixel size (Å)."),
        kv: float = typer.Option(300.0, "--kv", help="Voltage (kV)."),
        cs: float = typer.Option(2.7, "--cs", help="Spherical aberration (mm)."),
        q0: float = typer.Option(0.1, "--q0", help="Amplitude contrast."),
        optics_group: str = typer.Option("opticsGroup1", "--optics-group", help="Optics group name."),
        mtf: str = typer.Option("", "--mtf", help="Detector MTF STAR file, or a detector curve shipped by "
                                                  "ttsim3d (e.g. k3_CDS_300kV_FL1, falcon4EC_300kV)."),
        beamtilt_x: float = typer.Option(0.0, "--beamtilt-x", help="Beam tilt X (mrad)."),
        beamtilt_y: float = typer.Option(0.0, "--beamtilt-y", help="Beam tilt Y (mrad)."),
        only_new: bool = typer.Option(False, "--only-new", help="On-the-fly: keep earlier imports, add new files."),
        stable: float = typer.Option(0.0, "--stable-seconds", help="Skip files modified more recently (s)."),
    ) -> None:
        """Import movies or micrographs → DIR/movies.star or DIR/micrographs.star."""
        from vitrify.jobs.import_ import Options

        options = Options(i, not micrographs, angpix, kv, cs, q0, optics_group, mtf, beamtilt_x, beamtilt_y,
                          only_new, stable)
        typer.echo(f"wrote {_run('import_', options, o)}")


def _motioncorr(app: typer.Typer) -> None:
    @app.command("motioncorr")
    def motioncorr(
        i: str = typer.Option(..., "--i", help="movies.star."),
        o: Path = typer.Option(..., "--o", help="Output job directory."),
        dose_per_frame: float = typer.Option(1.0, "--dose-per-frame", help="Exposure per frame (e/Å²)."),
        pre_exposure: float = typer.Option(0.0, "--pre-exposure", help="Exposure before the movie (e/Å²)."),
        no_dose_weighting: bool = typer.Option(False, "--no-dose-weighting", help="Plain sums only."),
        patch_x: int = typer.Option(5, "--patch-x", help="Patches along X (1 with --patch-y 1: global only)."),
        patch_y: int = typer.Option(5, "--patch-y", help="Patches along Y."),
        bfactor: float = typer.Option(150.0, "--bfactor", help="B-factor for alignment (Å²)."),
        group_frames: int = typer.Option(1, "--group-frames", help="Frames summed for global alignment."),
        binning: float = typer.Option(1.0, "--bin", help="Binning factor of the output."),
        float16: bool = typer.Option(False, "--float16", help="Write micrographs as MRC mode 12."),
        gain: str = typer.Option("", "--gain", help="Gain reference (MRC/TIFF)."),
        gain_rot: int = typer.Option(0, "--gain-rot", help="Gain rotation (0-3, x 90 degrees)."),
        gain_flip: int = typer.Option(0, "--gain-flip", help="Gain flip (0 none, 1 upside down, 2 left-right)."),
        defects: str = typer.Option("", "--defects", help="Defect mask image (nonzero = bad pixel)."),
        first_frame: int = typer.Option(1, "--first-frame", help="First frame to sum (1-based)."),
        last_frame: int = typer.Option(-1, "--last-frame", help="Last frame to sum (-1: last)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        eer_grouping: int = typer.Option(32, "--eer-grouping", help="EER: internal frames summed per frame."),
        eer_upsampling: int = typer.Option(1, "--eer-upsampling", help="EER: 1 = 4K, 2 = 8K rendering."),
    ) -> None:
        """Correct beam-induced motion → DIR/corrected_micrographs.star."""
        from vitrify.jobs.motioncorr import Options
        from vitrify.preprocess.motion import MotionOptions

        motion = MotionOptions(bfactor_angst2=bfactor, patches_x=patch_x, patches_y=patch_y,
                               group_frames=group_frames)
        options = Options(i, motion, dose_per_frame, pre_exposure, not no_dose_weighting, True, binning,
                          float16, gain, gain_rot, gain_flip, defects, first_frame, last_frame, device,
                          eer_grouping=eer_grouping, eer_upsampling=eer_upsampling)
        typer.echo(f"wrote {_run('motioncorr', options, o)}")


def _select(app: typer.Typer) -> None:
    @app.command("select")
    def select(
        i: str = typer.Option(..., "--i", help="micrographs.star or particles.star."),
        o: Path = typer.Option(..., "--o", help="Output job directory."),
        label: str = typer.Option("rlnCtfMaxResolution", "--label", help="Column to select on."),
        min_value: float = typer.Option(-9999.0, "--min", help="Keep rows with value >= this."),
        max_value: float = typer.Option(9999.0, "--max", help="Keep rows with value <= this."),
    ) -> None:
        """Keep rows whose --label value lies between --min and --max → DIR/micrographs.star or particles.star."""
        from vitrify.jobs.select import Options

        typer.echo(f"wrote {_run('select', Options(i, 'values', label, min_value, max_value), o)}")


def register(app: typer.Typer) -> None:
    """Add the preprocessing commands to ``app``."""
    for add in (_import, _motioncorr, _ctffind, _autopick, _extract, _select):
        add(app)
