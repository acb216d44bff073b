"""``python -m training_app.trainer`` entry point."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
