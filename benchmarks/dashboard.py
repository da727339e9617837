"""The dashboard on a large session, and its screenshots.

``python benchmarks/dashboard.py scale [--micrographs 2000]``: builds a project of N micrographs
(MotionCorr, CtfFind and AutoPick outputs with one coordinate file per micrograph, EPU XML per
movie) in a temporary directory and times, through a real server, the change check behind the
event stream and every JSON endpoint, cold (first read) and warm (files unchanged: cached).

``python benchmarks/dashboard.py screenshots --project DIR --out docs/img [--name dashboard]``:
opens the dashboard of DIR in headless Chromium (the system's chromium + chromedriver) and saves
``<name>.png`` (the page) and ``<name>_micrographs.png`` (the per-micrograph figures).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.star import write_star
from vitrify.pipeline.project import Project


def _finish(project: Project, name: str) -> None:
    from vitrify.jobs.status import EXIT_SUCCESS, JobStatus

    (project.root / name / EXIT_SUCCESS).touch()
    project.record_status(name, JobStatus.SUCCEEDED)


def build_session(root: Path, n_micrographs: int, picks_per_micrograph: int = 150) -> Project:
    """A project with ``n_micrographs`` processed micrographs (no image files: figures only)."""
    rng = np.random.default_rng(0)
    project = Project.open(root)
    movies = [f"Movies/FoilHole_{i:06d}_Data.tiff" for i in range(n_micrographs)]
    (root / "Movies").mkdir()
    start = datetime.datetime(2026, 5, 1, 8, 0, tzinfo=datetime.timezone.utc)
    for i, movie in enumerate(movies):
        stamp = (start + datetime.timedelta(seconds=4.0 * i)).isoformat()
        (root / movie).with_suffix(".xml").write_text(
            f"<MicroscopeImage><acquisitionDateTime>{stamp}</acquisitionDateTime></MicroscopeImage>")
    imported = project.add_job("relion.import", {})
    write_star(root / imported / "movies.star", {"movies": pd.DataFrame({"rlnMicrographMovieName": movies})})
    _finish(project, imported)
    motion = project.add_job("relion.motioncorr", {"input_star_mics": f"{imported}movies.star"})
    names = [f"{motion}{m.removesuffix('.tiff')}.mrc" for m in movies]
    table = pd.DataFrame({"rlnMicrographName": names, "rlnAccumMotionTotal": rng.gamma(4, 3, n_micrographs)})
    write_star(root / motion / "corrected_micrographs.star", {"micrographs": table})
    _finish(project, motion)
    ctf = project.add_job("relion.ctffind", {"input_star_mics": f"{motion}corrected_micrographs.star"})
    defocus = rng.uniform(8000, 25000, n_micrographs)
    table = table.assign(rlnDefocusU=defocus + 200, rlnDefocusV=defocus - 200, rlnCtfAstigmatism=400.0,
                         rlnCtfMaxResolution=rng.uniform(3, 9, n_micrographs))
    write_star(root / ctf / "micrographs_ctf.star", {"micrographs": table})
    _finish(project, ctf)
    pick = project.add_job("relion.autopick", {"fn_input_autopick": f"{ctf}micrographs_ctf.star"})
    (root / pick / "Movies").mkdir()
    files = []
    for i in range(n_micrographs):
        coords = pd.DataFrame(rng.uniform(0, 4000, (picks_per_micrograph, 2)),
                              columns=["rlnCoordinateX", "rlnCoordinateY"])
        files.append(f"{pick}Movies/FoilHole_{i:06d}_Data_autopick.star")
        write_star(root / files[-1], {"": coords})
    write_star(root / pick / "autopick.star",
               {"coordinate_files": pd.DataFrame({"rlnMicrographName": names, "rlnMicrographCoordinates": files})})
    _finish(project, pick)
    return project


def _timed_get(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        size = len(response.read())
    return time.perf_counter() - start, size


def bench_scale(n_micrographs: int) -> None:
    """Time the change check and each endpoint on a session of ``n_micrographs``."""
    from vitrify.web import server as web

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        project = build_session(Path(tmp) / "project", n_micrographs)
        print(f"built a session of {n_micrographs} micrographs in {time.perf_counter() - t0:.1f} s")
        with _serving(project.root) as base:
            from vitrify.web._jobs import project_signature

            start = time.perf_counter()
            for _ in range(10):
                project_signature(project.root)
            print(f"change check (each poll of the event stream): {(time.perf_counter() - start) / 10 * 1e3:.1f} ms")
            print("| endpoint | cold (s) | warm, median of 5 (s) | bytes |\n|---|---|---|---|")
            for path in ("/api/state", "/api/micrographs", "/api/classes", "/api/maps"):
                cold, size = _timed_get(f"{base}{path}?token={web.__name__}")
                warm = statistics.median(_timed_get(f"{base}{path}?token={web.__name__}")[0] for _ in range(5))
                print(f"| {path} | {cold:.3f} | {warm:.3f} | {size:,} |")


class _serving:
    """Serve ``root`` on a free loopback port in a thread (token: the module name, for brevity)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> str:
        from vitrify.web import server as web

        self.sock = web.bind_socket("127.0.0.1", 0)
        self.server = web.make_server(web.create_app(self.root, web.__name__, poll_s=0.5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))


def _save_small(png: bytes, path: Path, height_px: int | None = None, colours: int = 256) -> None:
    """Save a screenshot (its top ``height_px`` rows) as a palette PNG (a few hundred kB at most)."""
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    if height_px is not None:
        picture = picture.crop((0, 0, picture.size[0], min(height_px, picture.size[1])))
    picture = picture.quantize(colours, method=Image.Quantize.MEDIANCUT)
    picture.save(path, optimize=True)
    print(f"{path}: {picture.size[0]}x{picture.size[1]} px, {path.stat().st_size / 1024:.0f} kB")


def screenshots(project: Path, out: Path, name: str, sections: tuple[str, ...] = ("micrographs",),
                whole_page: bool = True) -> None:
    """The page and some of its sections (``<name>_<section>.png``), as a user sees them."""
    from vitrify.web import server as web

    out.mkdir(parents=True, exist_ok=True)
    driver = _chrome()
    try:
        with _serving(project.resolve()) as base:
            driver.get(f"{base}/?token={web.__name__}")
            deadline = time.monotonic() + 30
            while driver.execute_script("return Number(document.body.dataset.refreshes || 0)") < 1:
                assert time.monotonic() < deadline, "the page did not load"
                time.sleep(0.2)
            time.sleep(1.5)  # pictures
            for _ in range(3):  # the layout reflows with the width: measure again after each resize
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1400, min(height + 200, 4200))  # the window's own frame
                time.sleep(0.5)
            if whole_page:
                height = driver.execute_script("return document.documentElement.scrollHeight")
                _save_small(driver.get_screenshot_as_png(), out / f"{name}.png", height)
            for section in sections:
                element = driver.find_element("id", f"{section}-section")
                _save_small(element.screenshot_as_png, out / f"{name}_{section}.png")
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    scale = sub.add_parser("scale")
    scale.add_argument("--micrographs", type=int, default=2000)
    shots = sub.add_parser("screenshots")
    shots.add_argument("--project", type=Path, required=True)
    shots.add_argument("--out", type=Path, default=Path("docs/img"))
    shots.add_argument("--name", default="dashboard")
    shots.add_argument("--sections", default="micrographs", help="comma-separated: schemes, jobs, failures, "
                                                                  "micrographs, classes, maps")
    shots.add_argument("--no-page", action="store_true", help="only the sections, not the whole page")
    args = parser.parse_args(argv)
    if args.what == "scale":
        bench_scale(args.micrographs)
    else:
        screenshots(args.project, args.out, args.name, tuple(filter(None, args.sections.split(","))),
                    not args.no_page)


if __name__ == "__main__":
    main(sys.argv[1:])
