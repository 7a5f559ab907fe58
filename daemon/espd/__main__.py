from espd.cli.main import main

raise SystemExit(main())
