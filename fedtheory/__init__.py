"""fedtheory: executable, measured checks of federated second-order optimisation theory.

The data path (STYLE.md): problems/*.toml -> :class:`FederatedProblem` -> a method's round map
-> :func:`run` -> :class:`Trace` -> rates / claims / plots / sweeps.
"""

from ._version import __version__
from .errors import FedTheoryError
from .methods import METHODS, make_method
from .problem import FederatedProblem, Reference
from .runner import iterate, run, run_batch
from .trace import COLUMNS, Trace

__all__ = [
    "__version__",
    "FedTheoryError",
    "FederatedProblem",
    "Reference",
    "METHODS",
    "make_method",
    "run",
    "run_batch",
    "iterate",
    "Trace",
    "COLUMNS",
]
