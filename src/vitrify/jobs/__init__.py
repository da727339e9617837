"""Jobs (L2): one thin module per RELION job type, each an Options dataclass + run(options, job_dir)."""
