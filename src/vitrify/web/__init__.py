"""Live dashboard (L4): reads the project directory; never imports the engine."""
