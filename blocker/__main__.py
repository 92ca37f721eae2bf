import sys

from blocker.cli.main import main

sys.exit(main())
