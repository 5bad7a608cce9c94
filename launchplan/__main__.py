"""`python -m launchplan` is `cei`."""

from launchplan.cli.main import main

main()
