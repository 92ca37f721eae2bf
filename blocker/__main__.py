import sys

from blocker.cli import main

sys.exit(main())
