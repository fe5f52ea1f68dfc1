"""fedtheory: executable, measured checks of federated second-order optimisation theory.

The data path (STYLE.md): problems/*.toml -> :class:`FederatedProblem` -> a method's round map
-> :func:`run` -> :class:`Trace` -> rates / claims / plots / sweeps.
"""

__version__ = "0.1.0"

from .errors import FedTheoryError  # noqa: E402
from .methods import METHODS, make_method  # noqa: E402
from .problem import FederatedProblem, Reference  # noqa: E402
from .runner import run  # noqa: E402
from .trace import COLUMNS, Trace  # noqa: E402

__all__ = ["__version__", "FedTheoryError", "FederatedProblem", "Reference", "METHODS",
           "make_method", "run", "Trace", "COLUMNS"]
