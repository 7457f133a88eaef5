from xtalbench.cli import main

raise SystemExit(main())
