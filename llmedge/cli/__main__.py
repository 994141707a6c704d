"""`python -m llmedge.cli`, the same as the `llmedge` command."""

import sys

from llmedge.cli.main import main

sys.exit(main())
