"""lorasite: the team portal (Django project package)."""

import os

# OpenMP threads that spin while they wait collapse when anything else wants the same cores: two
# torch threads training beside one other busy process ran 30-40x slower than one thread (see
# docs/operations.md, "CPU threads"). Sleeping waiters cost nothing measurable when the cores are
# free. It must be set before torch loads its OpenMP runtime, so it is set as the package loads;
# an operator's own OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
