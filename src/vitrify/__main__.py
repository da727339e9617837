"""`python -m vitrify` runs the command-line interface."""

from vitrify.cli.main import main

if __name__ == "__main__":
    main()
