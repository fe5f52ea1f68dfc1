"""Federated methods as pure round maps; ``METHODS`` maps each CLI name to its class."""

from . import dane, giant  # noqa: F401  (registers the methods "dane" and "giant")
from .base import (
    METHODS,
    Method,
    RoundContext,
    RoundInfo,
    ServerState,
    make_method,
    round_context,
)
from .fednl import FedNL
from .fednl_family import FedNLCR, FedNLLS, FedNLPP  # noqa: F401  (registers them)
from .fedpac import FedPAC
from .fedpm import FedPM
from .fedsophia import FedSophia
from .first_order import GD, FedAvg, FedProx, Scaffold
from .newton import Newton
from .sopm import SOPM

__all__ = [
    "METHODS",
    "Method",
    "RoundContext",
    "RoundInfo",
    "ServerState",
    "make_method",
    "round_context",
    "FedAvg",
    "FedNL",
    "FedPAC",
    "FedPM",
    "FedProx",
    "FedSophia",
    "GD",
    "Newton",
    "SOPM",
    "Scaffold",
]
