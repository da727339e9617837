"""Live dashboard (L4): ``vitrify dashboard`` serves a web page of a project directory.

It reads the project through :mod:`vitrify.pipeline` and :mod:`vitrify.io` (never the engine, never
torch) and writes nothing but the two scheme actions, abort and continue. :mod:`.server` holds the
Starlette app, :mod:`.command` the CLI command; the private modules read the project's files
(jobs, micrographs, classes, maps) and draw the pictures; ``static/`` is the page.
"""
