import sys

from promptability.cli import main

if __name__ == "__main__":  # a spawned worker process imports this module again; it must not start a second CLI
    sys.exit(main())
