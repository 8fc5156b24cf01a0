"""``python -m llmclient.testing.server``: see :mod:`llmclient.testing.server.cli`."""

import sys

from llmclient.testing.server.cli import main

sys.exit(main())
