"""``python -m shoal_agent`` runs the agent command."""
import sys

from .main import main

sys.exit(main())
