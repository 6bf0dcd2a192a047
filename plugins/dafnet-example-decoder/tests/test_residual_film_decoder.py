"""The residual FiLM decoder: dafnet's decoder contract, its parameter count, and that z matters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from dafnet_example_decoder.decoder import ResidualFiLMDecoder

from dafnet.errors import DafnetError
from dafnet.interfaces import Decoder
from dafnet.testing import DEFAULT_FACTS, check_decoder

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FACTS = DEFAULT_FACTS  # 32 x 32, C = 4, z_dim = 4


@pytest.mark.parametrize(
    "params",
    [
        {"width": 8, "num_blocks": 2, "film_hidden": 8},
        {"width": 4, "num_blocks": 1, "film_hidden": 4, "norm": "batch"},
        {"width": 6, "num_blocks": 3, "film_hidden": 5, "norm": "none", "negative_slope": 0.0},
    ],
)
def test_passes_the_decoder_contract(params):
    report = check_decoder(ResidualFiLMDecoder, params)
    assert report.outputs["image"] == (2, 1, 32, 32)
    assert report.trainable_parameters > 0


def test_default_params_pass_the_contract():
    assert check_decoder(ResidualFiLMDecoder).params == ResidualFiLMDecoder.Params()


def test_contract_on_other_facts():
    facts = FACTS.with_(image_size=(24, 40), anatomy_channels=8, z_dim=3, image_channels=2)
    report = check_decoder(ResidualFiLMDecoder, {"width": 4, "num_blocks": 1, "film_hidden": 4}, facts)
    assert report.outputs["image"] == (2, 2, 24, 40)


def test_entry_point_names_this_class():
    meta = tomllib.loads(PYPROJECT.read_text())
    group = meta["project"]["entry-points"]["dafnet.decoder"]
    assert group == {"residual_film": "dafnet_example_decoder.decoder:ResidualFiLMDecoder"}
    assert issubclass(ResidualFiLMDecoder, Decoder)


def test_parameter_count_matches_the_architecture():
    p = ResidualFiLMDecoder.Params(width=8, num_blocks=3, film_hidden=16)
    c, nz, w, b, hid = FACTS.anatomy_channels, FACTS.z_dim, 8, 3, 16
    expected = (
        (c * w * 9 + w)  # stem
        + b * 2 * (w * w * 9 + w)  # two convs per block; norms have no parameters
        + (nz * hid + hid) + (hid * b * 4 * w + b * 4 * w)  # FiLM MLP
        + (w * 1 + 1)  # 1x1 head
    )
    net = ResidualFiLMDecoder(p, FACTS)
    assert sum(t.numel() for t in net.parameters()) == expected


def test_new_decoder_ignores_z_then_learns_to_use_it():
    torch.manual_seed(0)
    facts = FACTS.with_(image_size=(16, 16))
    net = ResidualFiLMDecoder(ResidualFiLMDecoder.Params(width=8, num_blocks=2, film_hidden=16), facts)
    anatomy = torch.zeros(2, 4, 16, 16)
    anatomy[:, 0, :8], anatomy[:, 1, 8:] = 1, 1
    z = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    out = net(anatomy, z)
    assert torch.equal(out[0], out[1])  # zero-initialised FiLM: identity modulation

    # Same anatomy, two modalities: bright vs dark images; only z tells them apart.
    target = torch.stack([torch.full((1, 16, 16), 0.6), torch.full((1, 16, 16), -0.6)])
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = (net(anatomy, z) - target).abs().mean()
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.25 * first
    with torch.no_grad():
        out = net(anatomy, z)
    assert float((out[0] - out[1]).mean()) > 0.8


def test_wrong_input_shapes_are_clear_errors():
    net = ResidualFiLMDecoder(ResidualFiLMDecoder.Params(width=4, num_blocks=1, film_hidden=4), FACTS)
    with pytest.raises(DafnetError, match=r"expected anatomy \(B, 4, H, W\), got \(2, 3, 32, 32\)"):
        net(torch.zeros(2, 3, 32, 32), torch.zeros(2, 4))
    with pytest.raises(DafnetError, match=r"expected z \(2, 4\), got \(2, 5\)"):
        net(torch.zeros(2, 4, 32, 32), torch.zeros(2, 5))


def test_params_are_validated():
    with pytest.raises(ValueError, match="norm"):
        ResidualFiLMDecoder.Params(norm="layer")
    with pytest.raises(ValueError, match="width"):
        ResidualFiLMDecoder.Params(width=0)
