"""The application ``spark-submit`` runs for ``MaggyOperator``: ``maggy run`` on the
Spark driver. It sits in a folder of its own because spark-submit puts the
application's folder first on ``sys.path``; next to the engine's modules, their
names (``channel``, ``spec``, ...) would shadow other packages."""

import sys

from maggy_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
