from mosnas.cli import main

raise SystemExit(main())
