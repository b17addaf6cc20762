import sys

from bench.ab import main

sys.exit(main())
