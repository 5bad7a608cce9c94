"""`python3 -m launchplan.agent ...` (the zipapp has its own generated __main__)."""

from .main import main

raise SystemExit(main())
