"""``python -m shoal_client``: the same command as ``shoal-client``."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
