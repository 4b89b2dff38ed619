import sys

from navila_tune.handoff.cli import main

sys.exit(main())
