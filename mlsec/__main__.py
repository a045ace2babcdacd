"""Allow ``python -m mlsec``."""

from mlsec.cli import main

main()
