"""`python -m supervisor`: the same entry point as the `balena-supervisor` command."""

from supervisor.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
