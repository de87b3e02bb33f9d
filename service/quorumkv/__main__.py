import sys

from quorumkv.cli import main

sys.exit(main())
