import sys

from genapi.cli.main import main

sys.exit(main())
