import sys

from convsync.cli import main

sys.exit(main())
