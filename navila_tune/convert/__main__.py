from navila_tune.convert.cli import main

raise SystemExit(main())
