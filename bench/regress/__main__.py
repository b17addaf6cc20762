import sys

from bench.regress import main

sys.exit(main())
