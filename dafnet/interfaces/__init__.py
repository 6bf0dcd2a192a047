"""The abstract interfaces of dafnet: one ABC per registry kind, with typed outputs.

Importing this package imports torch; the CLI imports it lazily.
"""

from dafnet.interfaces.base import Component, Params
from dafnet.interfaces.data import DataSource, Subject, Volume
from dafnet.interfaces.facts import Facts, MissingFactError
from dafnet.interfaces.method import (
    ComponentChoice,
    HealthBound,
    HealthSignals,
    LossOutput,
    Method,
    MethodContext,
    Phase,
    ResultTable,
    Role,
    RoleSummary,
)
from dafnet.interfaces.metric import AlignmentErrors, Metric, MetricInputs, MetricResult
from dafnet.interfaces.networks import (
    Aligner,
    AlignmentOutput,
    AnatomyEncoder,
    AnatomyOutput,
    Decoder,
    Discriminator,
    Fuser,
    LossTerm,
    ModalityEncoder,
    ModalityOutput,
    Network,
    PairingHead,
    PairingOutput,
    SegmentationOutput,
    Segmentor,
)

__all__ = [
    "AlignmentErrors",
    "AlignmentOutput",
    "Aligner",
    "AnatomyEncoder",
    "AnatomyOutput",
    "Component",
    "ComponentChoice",
    "DataSource",
    "Decoder",
    "Discriminator",
    "Facts",
    "Fuser",
    "HealthBound",
    "HealthSignals",
    "LossOutput",
    "LossTerm",
    "Method",
    "MethodContext",
    "Metric",
    "MetricInputs",
    "MetricResult",
    "MissingFactError",
    "ModalityEncoder",
    "ModalityOutput",
    "Network",
    "PairingHead",
    "PairingOutput",
    "Params",
    "Phase",
    "ResultTable",
    "Role",
    "RoleSummary",
    "SegmentationOutput",
    "Segmentor",
    "Subject",
    "Volume",
]
