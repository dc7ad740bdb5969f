"""``python -m toolkit`` runs the CLI (used by the tests to get real exit codes)."""

from toolkit.cli import main

if __name__ == "__main__":
    main()
