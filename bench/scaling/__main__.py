import sys

from bench.scaling import main

sys.exit(main())
