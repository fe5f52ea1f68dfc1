"""Federated methods as pure round maps; ``METHODS`` maps each CLI name to its class."""

from .base import METHODS, Method, RoundContext, RoundInfo, ServerState, make_method
from .fednl import FedNL
from .fedpac import FedPAC
from .fedpm import FedPM
from .fedsophia import FedSophia
from .first_order import GD, FedAvg, FedProx, Scaffold
from .newton import Newton
from .sopm import SOPM

__all__ = ["METHODS", "Method", "RoundContext", "RoundInfo", "ServerState", "make_method",
           "FedAvg", "FedNL", "FedPAC", "FedPM", "FedProx", "FedSophia", "GD", "Newton",
           "SOPM", "Scaffold"]
