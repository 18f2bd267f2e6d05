from mosnas.cli.main import main

raise SystemExit(main())
