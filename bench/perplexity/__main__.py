import sys

from bench.perplexity import main

sys.exit(main())
