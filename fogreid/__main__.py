from fogreid.cli import main

raise SystemExit(main())
