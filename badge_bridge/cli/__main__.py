"""`python -m badge_bridge.cli`."""

from badge_bridge.cli import main

main()
