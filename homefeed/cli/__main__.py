"""`python -m homefeed.cli`: the same as the `homefeed` command."""

import sys

from homefeed.cli import main

sys.exit(main())
