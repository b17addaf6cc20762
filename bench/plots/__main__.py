import sys

from bench.plots import main

sys.exit(main())
