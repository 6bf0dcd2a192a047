"""A component that breaks its contract is named, with its recipe key, before anything trains:
failing constructors, unknown params of plain pydantic ``Params``, missing or unknown facts,
and outputs of the wrong type, shape or value (DAFNet's ``summary`` probe, run by the engine)."""

from __future__ import annotations

import copy

import pytest
import torch
from _toys import TINY_DAFNET
from pydantic import BaseModel
from rich.console import Console
from torch import nn

from dafnet import interfaces as I
from dafnet.components.decoders.film import FiLMDecoder
from dafnet.config.errors import RecipeError
from dafnet.config.resolve import parse_recipe, resolve
from dafnet.engine import train
from dafnet.errors import DafnetError
from dafnet.registry import register


class HalfSizeDecoder(FiLMDecoder):
    def forward(self, anatomy, z):
        return super().forward(anatomy, z)[..., ::2, ::2]


class TupleDecoder(FiLMDecoder):
    def forward(self, anatomy, z):
        return (super().forward(anatomy, z),)


class NaNDecoder(FiLMDecoder):
    def forward(self, anatomy, z):
        return super().forward(anatomy, z) * float("nan")


class OneChannelFuser(I.Fuser):
    class Params(I.Params):
        pass

    def forward(self, anatomies):
        return torch.stack(anatomies).amax(0)[:, :1]


class CrashingDecoder(I.Decoder):
    class Params(I.Params):
        pass

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.width = params.depth  # no such param: the plugin's own bug

    def forward(self, anatomy, z):
        return anatomy[:, :1]


class FactHungryDecoder(I.Decoder):
    class Params(I.Params):
        pass

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.n = facts.num_slices

    def forward(self, anatomy, z):
        return anatomy[:, :1]


class PlainParamsDecoder(I.Decoder):
    class Params(BaseModel):  # not dafnet.interfaces.Params: pydantic ignores unknown keys
        width: int = 4

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.conv = nn.Conv2d(facts.require("anatomy_channels"), 1, 1)

    def forward(self, anatomy, z):
        return torch.tanh(self.conv(anatomy))


def recipe_with(role: str, name: str, params: dict | None = None) -> dict:
    raw = copy.deepcopy(TINY_DAFNET)
    raw["model"][role] = {"name": name, "params": params or {}}
    return raw


def train_error(tmp_path, raw) -> str:
    run_dir = tmp_path / "run"
    with pytest.raises(DafnetError) as err:
        train(resolve(parse_recipe(raw)), run_dir=run_dir, console=Console(quiet=True))
    written = sorted(p.name for p in run_dir.rglob("*")) if run_dir.exists() else []
    assert not [n for n in written if n.endswith((".json", ".yaml", ".safetensors"))], written
    return " ".join(str(err.value).split())


@pytest.mark.parametrize("role, cls, needle", [
    ("decoder", HalfSizeDecoder, "returned a tensor of shape (1, 1, 16, 16), expected (1, 1, 32, 32)"),
    ("decoder", TupleDecoder, "returned tuple, expected a tensor of shape (1, 1, 32, 32)"),
    ("decoder", NaNDecoder, "returned non-finite values"),
    ("fuser", OneChannelFuser, "expected (1, 8, 32, 32)"),
])
def test_a_component_breaking_its_output_contract_stops_training_before_it_starts(tmp_path, role, cls, needle):
    register(role, "broken_toy", cls)
    message = train_error(tmp_path, recipe_with(role, "broken_toy"))
    assert "'broken_toy'" in message and needle in message


@pytest.mark.parametrize("cls, needle", [
    (CrashingDecoder, "failed to build: AttributeError"),
    (FactHungryDecoder, "there is no fact 'num_slices'"),
])
def test_a_failing_constructor_names_the_component_and_its_key(tmp_path, cls, needle):
    register("decoder", "broken_toy", cls)
    message = train_error(tmp_path, recipe_with("decoder", "broken_toy"))
    assert "decoder 'broken_toy' (runtime)" in message and "model.decoder" in message and needle in message


def test_unknown_params_are_reported_even_for_a_plain_pydantic_params():
    register("decoder", "plain_toy", PlainParamsDecoder)
    with pytest.raises(RecipeError) as err:
        resolve(parse_recipe(recipe_with("decoder", "plain_toy", {"widht": 3})))
    issue = err.value.issues[0]
    assert issue.path == "model.decoder.params.widht" and "did you mean 'width'" in issue.message
    assert "dafnet plugins info plain_toy" in issue.hint


def test_a_missing_fact_is_a_dafnet_error():
    facts = I.Facts()
    with pytest.raises(DafnetError, match="'z_dim' is not known yet"):
        facts.require("z_dim")
    assert not hasattr(facts, "num_slices")  # an unknown fact is an AttributeError too
