"""Suite-wide settings: in CI (CI=true), hypothesis runs derandomized without an example database, so a
landing is decided by the code, not by the draw. Locally it explores freshly on every run."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
