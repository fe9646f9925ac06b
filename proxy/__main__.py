"""``python -m proxy`` is the ``poolproxy`` command."""

import sys

from proxy.main import main

sys.exit(main())
