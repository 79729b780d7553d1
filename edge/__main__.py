# `micropython -m edge CONFIG.json` (unix port, repo on MICROPYPATH) and `python -m edge CONFIG.json`:
# run a leaf from its JSON config. Exit code 2 for a bad config, 1 for a start-up failure.
import sys

from edge.compat import IS_MP

if IS_MP and ".frozen" not in sys.path:
    # MICROPYPATH replaces the default path, which held the frozen asyncio.
    sys.path.append(".frozen")

from edge.leaf.runner import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
