import sys

from nucseg_rt.cli import main

sys.exit(main())
