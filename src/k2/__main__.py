from k2.cli import main

raise SystemExit(main())
