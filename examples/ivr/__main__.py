"""``python -m examples.ivr`` (SIP + Twilio) or ``python -m examples.ivr --simulate``: see examples/README.md."""

import sys

from examples.ivr.serve import main

if __name__ == "__main__":
    sys.exit(main())
