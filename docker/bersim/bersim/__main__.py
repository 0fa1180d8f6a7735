"""`python -m bersim`: the container's entry point (see bersim.cli)."""

from bersim.cli import main

raise SystemExit(main())
