import sys

from promptability.cli import main

sys.exit(main())
