"""Simulated micrographs and movies against their ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from vitrify.io.movies import read_gain, read_movie
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star
from vitrify.sim.micrographs import MicrographOptions, simulate_micrographs
from vitrify.sim.movies import simulate_movies


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_particles_sit_at_their_coordinates_dark_and_apart(tmp_path):
    options = MicrographOptions(n_micrographs=2, size_px=(256, 256), pixel_size_angst=2.0,
                                particles_per_micrograph=12, carbon_fraction=1.0, seed=4)
    data = simulate_micrographs(options, tmp_path)
    particles = data.truth["particles"]
    assert len(particles) > 10
    for name, mic in zip(data.truth["micrographs"]["rlnMicrographName"], data.files):
        expected, pixel = read_mrc(tmp_path / "truth_micrographs" / f"{mic.stem}.mrc")
        counts, _ = read_mrc(mic)
        # Poisson counts around the expected counts
        assert counts.sum() == pytest.approx(expected.sum(), rel=0.01)
        assert expected.mean() == pytest.approx(options.total_dose * 4.0 * np.exp(-40 / 350), rel=0.1)
        rows = particles[particles["rlnMicrographName"] == name]
        xy = rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        gaps = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        radius_px = gaps[gaps > 0].min() / 2  # >= one particle radius by construction
        assert radius_px >= 8
        # black protein: the low-pass image is darker at each particle than on average
        smooth = ndimage.gaussian_filter(expected, 4)
        values = smooth[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
        assert (values < np.median(smooth)).mean() > 0.9
    from vitrify.io.acquisition import read_acquisition

    for path in (data.files[0].with_suffix(".xml"), data.files[0].with_name(data.files[0].name + ".mdoc")):
        params = read_acquisition(path)  # one exposure of the whole dose
        assert params.n_frames == 1 and params.pixel_size_angst == pytest.approx(2.0)
        assert params.total_dose_e_per_angst2 == pytest.approx(options.total_dose)
    coords = read_star(tmp_path / "coordinates" / f"{data.files[0].stem}.star")
    table = next(iter(coords.values()))
    assert len(table) == (particles["rlnMicrographName"] == data.truth["micrographs"]
                          ["rlnMicrographName"].iloc[0]).sum()


def _undo(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    from vitrify.core.shifts import shift_2d

    out = np.zeros(frames.shape[1:])
    for frame, (sx, sy) in zip(frames, shifts):
        padded = torch.as_tensor(frame, dtype=torch.float64)
        out += shift_2d(padded, torch.tensor([-sx, -sy], dtype=torch.float64)).numpy()
    return out


def test_movie_frames_aligned_with_the_true_drift_give_back_the_micrograph(tmp_path):
    options = MicrographOptions(n_micrographs=1, size_px=(256, 256), pixel_size_angst=2.0,
                                particles_per_micrograph=12, n_frames=8, dose_per_frame=8.0,
                                drift_total_px=10.0, local_drift_px=0.2, carbon_fraction=0.0, seed=5)
    data = simulate_movies(options, tmp_path)
    frames = read_movie(data.files[0]).astype(np.float64)
    gain = read_gain(tmp_path / "Movies" / "gain.mrc")
    expected, _ = read_mrc(tmp_path / "truth_micrographs" / f"{data.files[0].stem}.mrc")
    motion = read_star(data.truth_star)["global_motion"]
    shifts = motion[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy()
    assert np.allclose(shifts[0], 0) and np.hypot(*shifts[-1]) > 3
    raw_sum = (frames * gain).sum(axis=0)
    aligned = _undo(frames * gain, shifts)
    crop = (slice(16, -16), slice(16, -16))
    low = [ndimage.gaussian_filter(x, 2)[crop] for x in (raw_sum, aligned, expected)]
    assert _corr(low[1], low[2]) > 0.8
    assert _corr(low[1], low[2]) > _corr(low[0], low[2]) + 0.1
    assert aligned.sum() == pytest.approx(expected.sum(), rel=0.02)


@pytest.mark.parametrize("movie_format", ["mrc", "tiff"])
def test_counts_are_poisson_and_gain_is_the_inverse_sensitivity(tmp_path, movie_format):
    # TIFF rows are stored flipped (RELION's convention): the gain must still line up with the frames
    options = MicrographOptions(n_micrographs=1, size_px=(128, 128), particles_per_micrograph=0,
                                carbon_fraction=0.0, ice_gradient_nm=0.0, n_frames=40,
                                dose_per_frame=4.0, drift_total_px=0.0, local_drift_px=0.0,
                                gain_sigma=0.1, movie_format=movie_format, seed=6)
    data = simulate_movies(options, tmp_path)
    frames = read_movie(data.files[0]).astype(np.float64)
    assert frames.shape == (40, 128, 128) and np.all(frames == np.round(frames))
    mean, var = frames.mean(axis=0), frames.var(axis=0, ddof=1)
    assert float(var.mean() / mean.mean()) == pytest.approx(1.0, abs=0.05)  # Poisson: var = mean
    gain = read_gain(tmp_path / "Movies" / "gain.mrc")
    corrected = mean * gain
    assert corrected.std() / corrected.mean() < 0.6 * mean.std() / mean.mean()
    assert (tmp_path / "Movies" / f"{data.files[0].name}.mdoc").exists()
    assert (tmp_path / "Movies" / f"{data.files[0].stem}.xml").exists()
    movies = read_star(tmp_path / "movies.star")
    assert list(movies) == ["optics", "movies"]
    assert movies["movies"]["rlnMicrographMovieName"].iloc[0] == f"Movies/mov_00001.{movie_format}"


def test_thon_rings_of_the_micrograph_sit_at_the_true_defocus(tmp_path):
    from vitrify.core.ctf import CtfParams, ctf_2d

    options = MicrographOptions(n_micrographs=1, size_px=(256, 256), pixel_size_angst=2.0,
                                particles_per_micrograph=40, carbon_fraction=0.0, ice_gradient_nm=0.0,
                                defocus_min_angst=12000.0, defocus_max_angst=20000.0, seed=7)
    data = simulate_micrographs(options, tmp_path)
    mic = data.truth["micrographs"].iloc[0]
    expected, _ = read_mrc(tmp_path / "truth_micrographs" / "mic_00001.mrc")
    power = np.abs(np.fft.rfft2(np.fft.ifftshift(expected - expected.mean()))) ** 2
    n = expected.shape[0]
    radius = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :])
    band = (radius > 0.08) & (radius < 0.35)

    def zeros_over_peaks(scale: float) -> float:
        ctf = ctf_2d(n, CtfParams(pixel_size_angst=options.pixel_size_angst, voltage_kv=options.voltage_kv,
                                  cs_mm=options.cs_mm, amplitude_contrast=options.amplitude_contrast,
                                  defocus_u_angst=mic["rlnDefocusU"] * scale,
                                  defocus_v_angst=mic["rlnDefocusV"] * scale,
                                  defocus_angle_deg=mic["rlnDefocusAngle"])).numpy()
        return power[band & (np.abs(ctf) < 0.15)].mean() / power[band & (np.abs(ctf) > 0.9)].mean()

    assert zeros_over_peaks(1.0) < 0.1  # the truth's CTF zeros are dark rings of the image
    assert min(zeros_over_peaks(0.9), zeros_over_peaks(1.1)) > 0.3


def test_ice_gradient_and_carbon_edge_follow_the_truth(tmp_path):
    from vitrify.sim.scene import ICE_MEAN_FREE_PATH_NM, carbon_side

    options = MicrographOptions(n_micrographs=3, size_px=(128, 128), pixel_size_angst=2.0,
                                particles_per_micrograph=8, carbon_fraction=1.0, ice_thickness_nm=100.0,
                                ice_gradient_nm=120.0, seed=8)
    data = simulate_micrographs(options, tmp_path)
    particles = data.truth["particles"]
    columns = np.arange(128)
    for _, mic in data.truth["micrographs"].iterrows():
        left, right = mic["vtfIceThicknessLeftNm"], mic["vtfIceThicknessRightNm"]
        assert abs(right - left) == pytest.approx(120.0) and (left + right) / 2 == pytest.approx(100.0)
        expected, _ = read_mrc(tmp_path / "truth_micrographs" / f"{Path(mic['rlnMicrographName']).stem}.mrc")
        beam = expected / (options.total_dose * options.pixel_size_angst**2)
        edge = np.array([np.radians(mic["vtfCarbonAngleDeg"]), mic["vtfCarbonOffsetPx"], mic["vtfCarbonEdge"]])
        distance = carbon_side((128, 128), edge)
        ice = distance < -15
        # zero-loss beam falls as exp(-thickness / mean free path) across the image (in x)
        usable = ice.sum(axis=0) > 10
        profile = np.array([beam[ice[:, c], c].mean() if usable[c] else np.nan for c in columns])
        slope = np.polyfit(columns[usable], np.log(profile[usable]), 1)[0]
        assert slope == pytest.approx(-(right - left) / 127 / ICE_MEAN_FREE_PATH_NM, rel=0.2)
        # the carbon film (extra phase, low-pass contrast ~ 2 Q0 phase) is darker than the ice side
        attenuation = np.exp(-np.linspace(left, right, 128) / ICE_MEAN_FREE_PATH_NM)[None, :]
        relative = beam / attenuation
        assert relative[distance > 15].mean() < relative[ice].mean() - 0.1
        # particles only on the ice, at least a radius from the edge
        rows = particles[particles["rlnMicrographName"] == mic["rlnMicrographName"]]
        x, y = rows["rlnCoordinateX"].to_numpy(), rows["rlnCoordinateY"].to_numpy()
        assert len(rows) >= 1 and (distance[y.astype(int), x.astype(int)] < -8).all()


def _shift_between(moved: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(dx, dy) such that ``moved(r) ~ reference(r - d)``: windowed cross-correlation peak."""
    window = np.outer(np.hanning(moved.shape[0]), np.hanning(moved.shape[1]))
    a, b = (moved - moved.mean()) * window, (reference - reference.mean()) * window
    corr = np.fft.fftshift(np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), s=a.shape))
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)

    def vertex(m: float, c: float, p: float) -> float:
        return 0.5 * (m - p) / (m - 2 * c + p)

    return (ix - a.shape[1] // 2 + vertex(corr[iy, ix - 1], corr[iy, ix], corr[iy, ix + 1]),
            iy - a.shape[0] // 2 + vertex(corr[iy - 1, ix], corr[iy, ix], corr[iy + 1, ix]))


def test_local_drift_in_the_frames_is_the_truth_table(tmp_path):
    import tifffile

    options = MicrographOptions(n_micrographs=1, size_px=(256, 256), pixel_size_angst=2.0,
                                particles_per_micrograph=60, carbon_fraction=0.0, ice_gradient_nm=0.0,
                                n_frames=2, dose_per_frame=100.0, drift_total_px=0.0, local_drift_px=3.0,
                                gain_sigma=0.0, seed=9)
    data = simulate_movies(options, tmp_path)
    with tifffile.TiffFile(data.files[0]) as tif:  # LZW-compressed TIFF, one page per frame
        assert len(tif.pages) == 2 and tif.pages[0].compression == tifffile.COMPRESSION.LZW
    last = read_movie(data.files[0]).astype(np.float64)[-1]
    expected, _ = read_mrc(tmp_path / "truth_micrographs" / f"{data.files[0].stem}.mrc")
    local = read_star(data.truth_star)["local_motion"]
    local = local[local["rlnMicrographFrameNumber"] == 2]
    assert len(local) == 16
    errors, sizes = [], []
    for _, point in local.iterrows():
        x, y = int(round(point["rlnCoordinateX"])), int(round(point["rlnCoordinateY"]))
        patch = (slice(y - 20, y + 20), slice(x - 20, x + 20))
        dx, dy = _shift_between(last[patch], expected[patch])
        errors.append(np.hypot(dx - point["rlnMicrographShiftX"], dy - point["rlnMicrographShiftY"]))
        sizes.append(np.hypot(point["rlnMicrographShiftX"], point["rlnMicrographShiftY"]))
    assert np.median(sizes) > 0.8  # the field really moves the specimen ...
    assert np.median(errors) < 0.35 and max(errors) < 0.8  # ... by the recorded amount


def test_dose_per_frame_and_metadata_match_the_options(tmp_path):
    from vitrify.io.acquisition import read_acquisition
    from vitrify.sim.scene import ICE_MEAN_FREE_PATH_NM

    options = MicrographOptions(n_micrographs=2, size_px=(96, 128), pixel_size_angst=1.5,
                                particles_per_micrograph=0, carbon_fraction=0.0, ice_gradient_nm=0.0,
                                ice_thickness_nm=60.0, n_frames=5, dose_per_frame=3.0, gain_sigma=0.0,
                                exposure_time_s=2.5, seed=10)
    data = simulate_movies(options, tmp_path)
    truth = data.truth["micrographs"]
    for movie in data.files:
        frames = read_movie(movie).astype(np.float64)
        assert frames.shape == (5, 96, 128)
        per_frame = options.dose_per_frame * options.pixel_size_angst**2 * np.exp(-60 / ICE_MEAN_FREE_PATH_NM)
        np.testing.assert_allclose(frames.mean(axis=(1, 2)), per_frame, rtol=0.03)
        for path in (movie.with_suffix(".xml"), movie.with_name(movie.name + ".mdoc")):
            params = read_acquisition(path)
            assert params.pixel_size_angst == pytest.approx(1.5) and params.voltage_kv == 300.0
            assert params.n_frames == 5 and params.frame_size_px == (128, 96)
            assert params.dose_per_frame_e_per_angst2 == pytest.approx(3.0)
            assert params.exposure_time_s == pytest.approx(2.5)
            mean_defocus = (truth["rlnDefocusU"] + truth["rlnDefocusV"]).mean() / 2
            assert params.applied_defocus_um == pytest.approx(-mean_defocus / 1e4, rel=1e-3)


@pytest.mark.parametrize("voltage_kv,sigma", [(100, 9.24e-4), (200, 7.29e-4), (300, 6.53e-4)])
def test_interaction_constant_matches_kirkland_table(voltage_kv, sigma):
    # sigma_e in rad / (V A), as tabulated in Kirkland, Advanced Computing in Electron Microscopy
    from vitrify.sim.scene import interaction_constant

    assert interaction_constant(voltage_kv) == pytest.approx(sigma, rel=2e-3)


def _pair_distances(rows) -> np.ndarray:
    xy = rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
    gaps = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    return gaps[np.triu_indices(len(xy), 1)]


@pytest.mark.parametrize("min_distance_angst", [0.0, 30.0])
def test_crowding_follows_the_minimum_distance(tmp_path, min_distance_angst):
    from vitrify.sim.micrographs import build_specimen

    options = MicrographOptions(n_micrographs=1, size_px=(192, 192), pixel_size_angst=2.0,
                                particles_per_micrograph=80, min_distance_angst=min_distance_angst,
                                carbon_fraction=0.0, seed=11)
    diameter_px = 2 * build_specimen(options, torch.device("cpu")).radius_px
    gaps = _pair_distances(simulate_micrographs(options, tmp_path).truth["particles"])
    if min_distance_angst == 0:  # default: one particle diameter, particles never overlap
        assert gaps.min() >= diameter_px
    else:  # crowded: neighbours closer than a diameter, never closer than asked
        assert gaps.min() >= min_distance_angst / 2.0 and (gaps < diameter_px).sum() >= 3
        assert min_distance_angst / 2.0 < 0.7 * diameter_px


def test_negative_minimum_distance_is_an_input_error():
    from vitrify.io.errors import InputError

    with pytest.raises(InputError, match="--min-distance"):
        MicrographOptions(min_distance_angst=-1.0)


def test_tiff_and_mrc_movies_of_one_seed_hold_the_same_frames(tmp_path):
    movies = {}
    for movie_format in ("tiff", "mrc"):
        options = MicrographOptions(n_micrographs=1, size_px=(64, 96), particles_per_micrograph=2,
                                    n_frames=3, movie_format=movie_format, seed=12)
        movies[movie_format] = read_movie(simulate_movies(options, tmp_path / movie_format).files[0])
    assert movies["tiff"].shape == (3, 64, 96)
    np.testing.assert_array_equal(movies["tiff"].astype(np.int64), movies["mrc"].astype(np.int64))
