"""``python -m voicegate`` is the same as the ``voicegate`` command."""

import sys

from voicegate.cli import main

sys.exit(main())
