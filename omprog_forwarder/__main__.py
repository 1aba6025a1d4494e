from omprog_forwarder.cli import main

raise SystemExit(main())
