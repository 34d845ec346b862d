import sys

from huihua.cli import main

sys.exit(main())
