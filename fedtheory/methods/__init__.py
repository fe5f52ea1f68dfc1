"""Federated methods as pure round maps; ``METHODS`` maps each CLI name to its class."""

from .base import METHODS, Method, RoundContext, RoundInfo, ServerState, make_method
from .fedpm import FedPM
from .newton import Newton
from .sopm import SOPM

__all__ = ["METHODS", "Method", "RoundContext", "RoundInfo", "ServerState", "make_method",
           "FedPM", "Newton", "SOPM"]
