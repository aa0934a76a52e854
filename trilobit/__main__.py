"""``python -m trilobit``: the same as the ``trilobit`` command."""

from trilobit.cli import main

raise SystemExit(main())
