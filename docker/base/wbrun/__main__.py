"""`python -m wbrun`: the container's entry point (see wbrun.cli)."""

from wbrun.cli import main

raise SystemExit(main())
