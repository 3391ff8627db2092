import sys

from agent.serving.cli import main

sys.exit(main())
