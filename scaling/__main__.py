"""`python -m scaling` runs the mcscale command line."""

from scaling.cli import main

main()
