from wspec.cli import main

raise SystemExit(main())
