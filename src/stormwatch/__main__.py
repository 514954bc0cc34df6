from stormwatch.cli import main

raise SystemExit(main())
