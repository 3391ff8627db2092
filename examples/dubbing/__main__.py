"""``python -m examples.dubbing``: see examples/dubbing/dub_file.py and examples/README.md."""

import sys

from examples.dubbing.dub_file import main

if __name__ == "__main__":
    sys.exit(main())
