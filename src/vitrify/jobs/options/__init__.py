"""Each job's ``Options``, declared once and importable without torch.

``vitrify.jobs.options.<job>`` holds the job's frozen ``Options`` dataclass (every field made
with :mod:`vitrify.jobs.fields`, so its help, unit, CLI flag and RELION job.star name sit on
the field), ``options_from_job_star(values)`` and ``job_star_from_options(options)``. The job
module ``vitrify.jobs.<job>`` re-exports them beside ``run``; the CLI builds its commands
from them (:mod:`vitrify.cli._job_options`) without importing torch.
"""
