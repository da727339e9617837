"""Command-line interface (L4): typer app; each command module registers itself."""
