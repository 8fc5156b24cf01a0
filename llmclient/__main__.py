"""``python -m llmclient``: the same as the ``llmclient`` command."""

import sys

from llmclient.cli import main

sys.exit(main())
