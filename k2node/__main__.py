from k2node.cli import main

raise SystemExit(main())
