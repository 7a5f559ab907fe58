from espd.cli import main

raise SystemExit(main())
