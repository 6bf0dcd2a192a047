"""Contract checks for component authors (plugins and built-ins alike).

One function per registry kind resolves a component (a registry name, ``module:Class``
or the class itself), checks its ``Params`` (defaults validate, unknown keys are
rejected, every field documented), builds it with tiny :data:`DEFAULT_FACTS`
(or the facts you pass), runs a forward pass on a random batch of 2, checks the typed
outputs (shapes, float32, the value ranges the interface promises), back-propagates,
and round-trips the ``state_dict`` through safetensors into a fresh instance. Any
violation raises ``AssertionError`` naming the component, the property, what was
expected and what was found; success returns a :class:`ContractReport`::

    from dafnet.testing import check_decoder

    def test_my_decoder():
        check_decoder(MyDecoder, {"width": 8})

Importing this module imports torch (``import dafnet`` does not).
"""

from __future__ import annotations

from pydantic import BaseModel

from dafnet.interfaces import Facts
from dafnet.testing._contract import DEFAULT_FACTS, ContractReport, default_facts
from dafnet.testing.losses_metrics_sources import check_data_source, check_loss_term, check_metric
from dafnet.testing.networks import (
    check_aligner,
    check_anatomy_encoder,
    check_decoder,
    check_discriminator,
    check_fuser,
    check_modality_encoder,
    check_pairing_head,
    check_segmentor,
)

CHECKS = {
    "anatomy_encoder": check_anatomy_encoder,
    "modality_encoder": check_modality_encoder,
    "aligner": check_aligner,
    "fuser": check_fuser,
    "decoder": check_decoder,
    "segmentor": check_segmentor,
    "discriminator": check_discriminator,
    "pairing_head": check_pairing_head,
    "loss": check_loss_term,
    "metric": check_metric,
    "data_source": check_data_source,
}
"""Registry kind -> its contract check (``loss_term`` is accepted as an alias of ``loss``)."""


def check_component(kind: str, name_or_class: str | type, params: dict | BaseModel | None = None,
                    facts: Facts | None = None, **options) -> ContractReport:
    """Run the contract check of ``kind`` (e.g. ``"decoder"``) on a name or a class."""
    check = CHECKS.get("loss" if kind == "loss_term" else kind)
    if check is None:
        raise AssertionError(f"contract check for kind {kind!r}: expected one of "
                             f"{', '.join(CHECKS)}, got a kind without a check")
    return check(name_or_class, params, facts, **options)


__all__ = [
    "CHECKS",
    "DEFAULT_FACTS",
    "ContractReport",
    "check_aligner",
    "check_anatomy_encoder",
    "check_component",
    "check_data_source",
    "check_decoder",
    "check_discriminator",
    "check_fuser",
    "check_loss_term",
    "check_metric",
    "check_modality_encoder",
    "check_pairing_head",
    "check_segmentor",
    "default_facts",
]
