"""`python -m scaling` runs the mcscale command line."""

from scaling.cli.app import main

main()
