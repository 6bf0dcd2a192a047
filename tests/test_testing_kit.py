"""dafnet.testing: passes well-formed components, fails broken ones with a precise message,
and every built-in component passes its contract with tiny parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from dafnet import interfaces as I
from dafnet.builtins import BUILTINS
from dafnet.registry import register
from dafnet.testing import (
    CHECKS,
    DEFAULT_FACTS,
    ContractReport,
    check_aligner,
    check_anatomy_encoder,
    check_component,
    check_data_source,
    check_decoder,
    check_discriminator,
    check_fuser,
    check_loss_term,
    check_metric,
    check_modality_encoder,
    check_pairing_head,
    check_segmentor,
)


class NoParams(I.Params):
    pass


# =========================================================================== well-formed tiny components
class TinyAnatomy(I.AnatomyEncoder):
    class Params(I.Params):
        channels: int = Field(4, ge=1, description="anatomy channels")

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.convs = nn.ModuleList(nn.Conv2d(1, params.channels, 3, padding=1) for _ in facts.require("modalities"))

    @property
    def out_channels(self):
        return self.params.channels

    def forward(self, image, modality):
        p = torch.softmax(self.convs[modality](image), dim=1)
        hard = F.one_hot(p.argmax(1), p.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
        return I.AnatomyOutput(anatomy=p + (hard - p).detach(), probabilities=p)


class TinyModality(I.ModalityEncoder):
    Params = NoParams

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.conv = nn.Conv2d(facts.require("anatomy_channels") + 1, 4, 3, padding=1)
        self.mu = nn.Linear(4, facts.require("z_dim"))
        self.logvar = nn.Linear(4, facts.require("z_dim"))

    @property
    def z_dim(self):
        return self.facts.require("z_dim")

    def forward(self, image, anatomy):
        h = self.conv(torch.cat([anatomy, image], 1)).mean(dim=(2, 3))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(logvar / 2) if self.training else mu
        return I.ModalityOutput(z=z, mu=mu, logvar=logvar)


class TinySegmentor(I.Segmentor):
    Params = NoParams

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.conv = nn.Conv2d(facts.require("anatomy_channels"), facts.require("num_classes") + 1, 1)

    def forward(self, anatomy):
        logits = self.conv(anatomy)
        return I.SegmentationOutput(probabilities=torch.softmax(logits, 1), logits=logits)


class TinyAligner(I.Aligner):
    Params = NoParams

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.shift = nn.Linear(2 * facts.require("anatomy_channels"), 2)

    def forward(self, moving, fixed):
        shift = torch.tanh(self.shift(torch.cat([moving, fixed], 1).mean(dim=(2, 3))))
        eye = torch.eye(2, 3).expand(moving.shape[0], 2, 3)
        theta = eye + F.pad(shift[:, :, None], (2, 0))
        grid = F.affine_grid(theta, list(moving.shape), align_corners=False)
        return I.AlignmentOutput(warped=F.grid_sample(moving, grid, align_corners=False), grid=grid,
                                 parameters=shift)


class TinyFuser(I.Fuser):
    Params = NoParams

    def forward(self, anatomies):
        return torch.stack(anatomies).amax(0)


class TinyDecoder(I.Decoder):
    class Params(I.Params):
        gain: float = Field(1.0, gt=0, description="scale before tanh")

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.conv = nn.Conv2d(facts.require("anatomy_channels"), facts.image_channels, 1)
        self.film = nn.Linear(facts.require("z_dim"), 2)

    def forward(self, anatomy, z):
        gamma, beta = self.film(z)[:, :, None, None].unbind(1)
        return torch.tanh(self.params.gain * (self.conv(anatomy) * gamma[:, None] + beta[:, None]))


class TinyDiscriminator(I.Discriminator):
    Params = NoParams

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.conv = nn.Conv2d(facts.require("critic_channels"), 4, 4, stride=2)
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        return self.out(F.leaky_relu(self.conv(x), 0.2).mean(dim=(2, 3)))


class TinyPairing(I.PairingHead):
    Params = NoParams

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.mlp = nn.Linear(facts.num_candidates, facts.num_candidates)

    def forward(self, target, candidates):
        inter = (candidates * target[:, None]).sum(dim=(2, 3, 4))
        scores = 2 * inter / (candidates.sum(dim=(2, 3, 4)) + target.sum(dim=(1, 2, 3))[:, None] + 1e-6)
        return I.PairingOutput(weights=torch.softmax(self.mlp(scores), 1), scores=scores)


class TinyLoss(I.LossTerm):
    Params = NoParams

    def forward(self, prediction, target):
        return (prediction - target).abs().mean()


class TinyMetric(I.Metric):
    Params = NoParams

    def reset(self):
        self.correct, self.total = 0, 0

    def update(self, inputs):
        self.correct += int((inputs.prediction.argmax(1) == inputs.target).sum())
        self.total += inputs.target.numel()

    def compute(self):
        return I.MetricResult(summary={"accuracy": 100.0 * self.correct / self.total, "pixels": self.total})


class TinySource(I.DataSource):
    class Params(I.Params):
        subjects: int = Field(2, ge=1, description="subjects")

    modalities = ("a", "b")
    class_names = ("fg",)
    image_size = (8, 8)

    def load(self):
        rng = np.random.default_rng(0)
        out = []
        for i in range(self.params.subjects):
            vols = {}
            for m in self.modalities:
                img = rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32)
                vols[m] = I.Volume(img, (img > 0).astype(np.int64), np.arange(3.0))
            out.append(I.Subject(f"s{i}", vols))
        return out


GOOD = [
    (check_anatomy_encoder, TinyAnatomy, "anatomy"),
    (check_modality_encoder, TinyModality, "z"),
    (check_segmentor, TinySegmentor, "probabilities"),
    (check_aligner, TinyAligner, "warped"),
    (check_fuser, TinyFuser, "fused (1 anatomies)"),
    (check_decoder, TinyDecoder, "image"),
    (check_discriminator, TinyDiscriminator, "score"),
    (check_pairing_head, TinyPairing, "weights"),
    (check_loss_term, TinyLoss, "loss"),
    (check_metric, TinyMetric, None),
    (check_data_source, TinySource, "subjects"),
]


@pytest.mark.parametrize("check, cls, output", GOOD, ids=[c.__name__ for _, c, _ in GOOD])
def test_well_formed_components_pass(check, cls, output):
    report = check(cls)
    assert isinstance(report, ContractReport)
    assert report.target == f"{cls.__module__}:{cls.__qualname__}"
    assert len(report.checks) >= 5 and len(set(report.checks)) == len(report.checks)
    if output is not None:
        assert output in report.outputs
    assert report.params == cls.Params()


def test_report_describes_what_was_checked():
    report = check_anatomy_encoder(TinyAnatomy, {"channels": 3})
    assert report.kind == "anatomy_encoder"
    assert report.outputs == {"anatomy": (2, 3, 32, 32), "probabilities": (2, 3, 32, 32)}
    assert report.trainable_parameters == 2 * (3 * 9 + 3)
    for check in ("anatomy binary", "gradients reach every trainable parameter",
                  "safetensors round trip: anatomy", "Params rejects unknown keys"):
        assert check in report.checks
    assert "2 checks" not in str(report) and "TinyAnatomy" in str(report)


def test_dispatcher_resolves_registry_names_and_classes():
    register("decoder", "tiny_test_decoder", TinyDecoder)
    by_name = check_component("decoder", "tiny_test_decoder", {"gain": 2.0})
    assert by_name.name == "tiny_test_decoder" and by_name.params.gain == 2.0
    assert check_component("loss_term", TinyLoss).kind == "loss"
    assert set(CHECKS) == {"anatomy_encoder", "modality_encoder", "aligner", "fuser", "decoder", "segmentor",
                           "discriminator", "pairing_head", "loss", "metric", "data_source"}


def test_caller_facts_are_used():
    facts = DEFAULT_FACTS.with_(image_size=(16, 24), anatomy_channels=6, z_dim=2, image_channels=2)
    assert check_decoder(TinyDecoder, facts=facts).outputs["image"] == (2, 2, 16, 24)
    assert check_pairing_head(TinyPairing, facts=facts.with_(num_candidates=3)).outputs["weights"] == (2, 3)


def test_the_kit_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    check_modality_encoder(TinyModality)
    assert torch.equal(before, torch.get_rng_state())


def test_import_dafnet_does_not_import_torch():
    code = "import sys, dafnet, dafnet.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# =========================================================================== broken components
def fails(match: str):
    return pytest.raises(AssertionError, match=match)


class WrongShapeDecoder(TinyDecoder):
    def forward(self, anatomy, z):
        return super().forward(anatomy, z)[:, :, ::2, ::2]


class DoubleDecoder(TinyDecoder):
    def forward(self, anatomy, z):
        return super().forward(anatomy, z).double()


class UnboundedDecoder(TinyDecoder):
    def forward(self, anatomy, z):
        return 3 * super().forward(anatomy, z) + 0.5


class ZBlindDecoder(TinyDecoder):
    def forward(self, anatomy, z):
        return super().forward(anatomy, z.detach())


class UnusedParameterDecoder(TinyDecoder):
    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.forgotten = nn.Linear(3, 3)


class UnsavedStateDecoder(TinyDecoder):
    """A random non-persistent buffer: outputs differ after a safetensors round trip."""

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.register_buffer("offset", torch.rand(1) * 0.1, persistent=False)

    def forward(self, anatomy, z):
        return super().forward(anatomy, z) * 0.5 + self.offset


class NaNDecoder(TinyDecoder):
    def forward(self, anatomy, z):
        out = super().forward(anatomy, z)
        return out + torch.where(anatomy[:, :1] > 0, torch.nan, 0.0)


@pytest.mark.parametrize("cls, match", [
    (WrongShapeDecoder, r"decoder .*WrongShapeDecoder: image shape: expected \(2, 1, 32, 32\), got \(2, 1, 16, 16\)"),
    (DoubleDecoder, r"image dtype: expected torch.float32, got torch.float64"),
    (UnboundedDecoder, r"image range: expected within \[-1, 1\], got \[-?\d+\.\d+, \d+\.\d+\]"),
    (ZBlindDecoder, r"gradient reaches input 'z': expected a gradient .* got no gradient"),
    (UnusedParameterDecoder, r"gradients reach every trainable parameter: .* got no gradient for "
                             r"\['forgotten.weight', 'forgotten.bias'\]"),
    (UnsavedStateDecoder, r"safetensors round trip: image: expected identical eval-mode outputs .* max difference"),
    (NaNDecoder, r"image values: expected finite numbers, got \d+ NaN/inf entries"),
])
def test_broken_decoders_fail_precisely(cls, match):
    with fails(match):
        check_decoder(cls)


class SoftAnatomy(TinyAnatomy):
    def forward(self, image, modality):
        out = super().forward(image, modality)
        return I.AnatomyOutput(anatomy=out.probabilities, probabilities=out.probabilities)


class CrowdedAnatomy(TinyAnatomy):
    def forward(self, image, modality):
        out = super().forward(image, modality)
        return I.AnatomyOutput(anatomy=out.anatomy + (1 - out.anatomy) * (out.probabilities > 0).float(),
                               probabilities=out.probabilities)


class TupleAnatomy(TinyAnatomy):
    def forward(self, image, modality):
        out = super().forward(image, modality)
        return out.anatomy, out.probabilities


class LyingAnatomy(TinyAnatomy):
    @property
    def out_channels(self):
        return self.params.channels + 1


class OneModalityAnatomy(TinyAnatomy):
    def forward(self, image, modality):
        return super().forward(image, 0)


def test_broken_anatomy_encoders_fail_precisely():
    with fails(r"anatomy binary: expected values in \{0, 1\}, got \d+ other values"):
        check_anatomy_encoder(SoftAnatomy)
    with fails(r"anatomy channels on per pixel: expected at most 1, got 4"):
        check_anatomy_encoder(CrowdedAnatomy)
    with fails(r"output type \(modality 0 'a'\): expected AnatomyOutput, got tuple"):
        check_anatomy_encoder(TupleAnatomy)
    with fails(r"anatomy shape: expected \(2, 5, 32, 32\), got \(2, 4, 32, 32\)"):
        check_anatomy_encoder(LyingAnatomy)
    with fails(r"no gradient for \['convs.1.weight', 'convs.1.bias'\]"):
        check_anatomy_encoder(OneModalityAnatomy)


class MissingDefault(TinyDecoder):
    class Params(I.Params):
        gain: float = Field(description="scale before tanh")


class Undocumented(TinyDecoder):
    class Params(I.Params):
        gain: float = 1.0


class PlainModelParams(TinyDecoder):
    class Params(BaseModel):
        gain: float = Field(1.0, description="scale")


class LooseParams(TinyDecoder):
    class Params(I.Params):
        model_config = {**I.Params.model_config, "extra": "allow"}
        gain: float = Field(1.0, description="scale")


def test_params_conventions_are_enforced():
    with fails(r"Params defaults \(Params\(\) must validate\): expected a default for every field, "
               r"got no default for \['gain'\]"):
        check_decoder(MissingDefault)
    with fails(r"Params field descriptions: .* got none on \['gain'\]"):
        check_decoder(Undocumented)
    with fails(r"Params model: expected a nested class deriving dafnet.interfaces.Params"):
        check_decoder(PlainModelParams)
    with fails(r"Params extra keys: expected extra='forbid', got extra='allow'"):
        check_decoder(LooseParams)
    with fails(r"(?s)given params: expected valid TinyDecoder.Params, got .*gain.*greater than 0"):
        check_decoder(TinyDecoder, {"gain": -1})
    with fails(r"(?s)given params: .*gian.*Extra inputs are not permitted"):
        check_decoder(TinyDecoder, {"gian": 2})


class FolderSource(TinySource):
    class Params(I.Params):
        root: str = Field(description="the dataset folder")
        subjects: int = Field(2, ge=1, description="subjects")


def test_deliberately_required_params_must_be_declared_and_given(tmp_path):
    with fails(r"Params defaults \(Params\(\) must validate\): expected a default for every field, "
               r"got no default for \['root'\]"):
        check_data_source(FolderSource, {"root": str(tmp_path)})
    with fails(r"required params given: expected values for \['root'\], got none for \['root'\]"):
        check_data_source(FolderSource, required_params=("root",))
    with fails(r"required_params: expected fields of FolderSource.Params, got unknown \['path'\]"):
        check_data_source(FolderSource, {"root": "x"}, required_params=("path",))
    report = check_data_source(FolderSource, {"root": str(tmp_path)}, required_params=("root",))
    assert report.params.root == str(tmp_path)


class NotADecoder(nn.Module):
    Params = NoParams


class AbstractDecoder(I.Decoder):
    Params = NoParams


def test_resolution_failures_are_assertions():
    with fails(r"base class: expected a subclass of dafnet.interfaces.Decoder"):
        check_decoder(NotADecoder)
    with fails(r"abstract methods: expected all implemented, got unimplemented \['forward'\]"):
        check_decoder(AbstractDecoder)
    with fails(r"decoder 'no_such_decoder' could not be resolved: unknown decoder"):
        check_decoder("no_such_decoder")
    with fails(r"contract check for kind 'method'"):
        check_component("method", "dafnet")


class SigmoidPairing(TinyPairing):
    def forward(self, target, candidates):
        out = super().forward(target, candidates)
        return I.PairingOutput(weights=torch.sigmoid(out.weights), scores=out.scores)


class MismatchedSegmentor(TinySegmentor):
    def forward(self, anatomy):
        out = super().forward(anatomy)
        return I.SegmentationOutput(probabilities=out.probabilities, logits=out.logits * 2)


class SamplingInEval(TinyModality):
    def forward(self, image, anatomy):
        out = super().forward(image, anatomy)
        return I.ModalityOutput(z=out.mu + torch.randn_like(out.mu), mu=out.mu, logvar=out.logvar)


class ShapeChangingFuser(TinyFuser):
    def forward(self, anatomies):
        return torch.cat(anatomies, 1)


class DetachedDiscriminator(TinyDiscriminator):
    def forward(self, x):
        return super().forward(x.detach())


class WrongGridAligner(TinyAligner):
    def forward(self, moving, fixed):
        out = super().forward(moving, fixed)
        return I.AlignmentOutput(warped=out.warped, grid=out.grid.permute(0, 3, 1, 2), parameters=out.parameters)


def test_broken_networks_of_other_kinds_fail_precisely():
    with fails(r"weights sum over dim 1: expected 1 \(within 0.0001\), got max deviation"):
        check_pairing_head(SigmoidPairing)
    with fails(r"probabilities vs logits: expected softmax\(logits, dim=1\)"):
        check_segmentor(MismatchedSegmentor)
    with fails(r"eval-mode z: expected z == mu \(the mean\)"):
        check_modality_encoder(SamplingInEval)
    with fails(r"fused \(2 anatomies\) shape: expected \(2, 4, 32, 32\), got \(2, 8, 32, 32\)"):
        check_fuser(ShapeChangingFuser)
    with fails(r"gradient reaches input 'x'"):
        check_discriminator(DetachedDiscriminator)
    with fails(r"grid shape: expected \(2, 32, 32, 2\), got \(2, 2, 32, 32\)"):
        check_aligner(WrongGridAligner)


class PerSampleLoss(TinyLoss):
    def forward(self, prediction, target):
        return (prediction - target).abs().mean(dim=(1, 2, 3))


class OddlyNamedLoss(I.LossTerm):
    Params = NoParams

    def forward(self, foo, bar):
        return (foo - bar).pow(2).mean()


class StickyMetric(TinyMetric):
    def reset(self):
        if not hasattr(self, "correct"):
            super().reset()


class BadSource(TinySource):
    def load(self):
        subjects = super().load()
        subjects[0].volumes["a"].image *= 2
        return subjects


class RandomSource(TinySource):
    def load(self):
        subjects = super().load()
        subjects[0].volumes["a"].image[:] = np.random.uniform(-1, 1, (3, 8, 8))
        return subjects


def test_broken_losses_metrics_and_sources_fail_precisely():
    with fails(r"loss shape: expected \(\), got \(2,\)"):
        check_loss_term(PerSampleLoss)
    with fails(r"loss forward argument 'foo': .* pass inputs=\{...\} to check_loss_term"):
        check_loss_term(OddlyNamedLoss)
    report = check_loss_term(OddlyNamedLoss, inputs={"foo": torch.randn(2, 3), "bar": torch.randn(2, 3)})
    assert report.outputs == {"loss": ()}
    with fails(r"reset\(\) then the same updates"):
        check_metric(StickyMetric)
    with fails(r"subject 's0' 'a' image range: expected within \[-1, 1\]"):
        check_data_source(BadSource)
    with fails(r"load\(\) deterministic"):
        check_data_source(RandomSource)


# =========================================================================== built-ins
TINY_BUILTIN_PARAMS: dict[tuple[str, str], dict] = {
    ("anatomy_encoder", "unet_shared_decoder"): {"base_filters": 4, "depth": 2},
    ("modality_encoder", "vae"): {"filters": [4, 4, 4, 4], "dense_units": 8},
    ("segmentor", "conv_head"): {"filters": 8},
    ("aligner", "tps"): {"loc_filters": 4, "hidden": 8},
    ("aligner", "affine"): {"loc_filters": 4, "hidden": 8},
    ("aligner", "identity"): {},
    ("fuser", "max"): {},
    ("fuser", "mean"): {},
    ("decoder", "film"): {},
    ("decoder", "spade"): {"block_filters": [8, 8, 8], "hidden_channels": 8},
    ("discriminator", "lsgan_conv"): {"filters": [4, 8, 8, 8]},
    ("pairing_head", "dice_mlp"): {},
    ("loss", "dice"): {},
    ("loss", "cross_entropy"): {},
    ("loss", "supervised"): {},
    ("loss", "kl"): {},
    ("loss", "l1"): {},
    ("loss", "lsgan_generator"): {},
    ("loss", "lsgan_discriminator"): {},
    ("loss", "z_reconstruction"): {},
    ("metric", "dice"): {},
    ("metric", "hd95"): {},
    ("metric", "alignment"): {},
    ("metric", "dcor"): {},
    ("metric", "probe"): {},
    ("metric", "figures"): {},
    ("metric", "traversal"): {},
    ("data_source", "phantom"): {"subjects": 2, "slices": 2, "image_size": 32},
    ("data_source", "nnunet"): {"image_size": 32},  # + root: a tiny dataset written per test
    ("data_source", "datalist"): {"image_size": 32},  # + path: a datalist of that dataset
    ("data_source", "hf_datasets"): {"images": {"cine": "cine", "lge": "lge"}, "labels": {"lge": "lge_label"},
                                     "class_names": ["lv", "myocardium", "rv"], "subject_column": "subject"},
}
REQUIRED_PARAMS = {
    ("data_source", "nnunet"): ("root",),
    ("data_source", "datalist"): ("path",),
    ("data_source", "hf_datasets"): ("path", "images", "class_names"),
}


def nnunet_root(tmp_path) -> str:
    """Two phantom subjects written in the nnU-Net raw layout by dafnet's own writer."""
    from dafnet.data.nnunet_writer import write_nnunet_raw
    from dafnet.data.phantom import PhantomDataSource

    phantom = PhantomDataSource(PhantomDataSource.Params(subjects=2, slices=3, image_size=32))
    return str(write_nnunet_raw(phantom.load(), tmp_path / "raw", phantom.modalities, phantom.class_names))


def datalist_path(tmp_path) -> str:
    """A MONAI-style datalist (per-modality image and label paths) of that dataset."""
    import json

    raw = Path(nnunet_root(tmp_path))
    entries = [{"id": case, "image": {m: f"raw/imagesTr/{case}_{i:04d}.nii.gz" for i, m in enumerate(["cine", "lge"])},
                "label": {m: f"raw/labelsTr/{case}_{i:04d}.nii.gz" for i, m in enumerate(["cine", "lge"])}}
               for case in ("phantom_000", "phantom_001")]
    path = raw.parent / "datalist.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "lv", "2": "myocardium", "3": "rv"},
                                "modality": {"0": "cine", "1": "lge"}, "training": entries}))
    return str(path)


def hf_dataset_path(tmp_path) -> str:
    """A Hugging Face dataset saved to disk: one row per subject, (S, H, W) stacks per modality."""
    import datasets
    import numpy as np

    from dafnet.data.phantom import PhantomDataSource

    subjects = PhantomDataSource(PhantomDataSource.Params(subjects=2, slices=3, image_size=32)).load()
    table = {"subject": [s.id for s in subjects],
             "cine": [s.volumes["cine"].image for s in subjects],
             "lge": [s.volumes["lge"].image for s in subjects],
             "lge_label": [s.volumes["lge"].label.astype(np.uint8) for s in subjects]}
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "hf"))
    return str(tmp_path / "hf")
BUILTIN_COMPONENTS = sorted((kind, name) for kind, table in BUILTINS.items() if kind in CHECKS for name in table)


def test_every_builtin_component_has_tiny_params_here():
    assert set(BUILTIN_COMPONENTS) == set(TINY_BUILTIN_PARAMS)


@pytest.mark.parametrize("kind, name", BUILTIN_COMPONENTS, ids=[f"{k}:{n}" for k, n in BUILTIN_COMPONENTS])
def test_builtin_component_passes_its_contract(kind, name, tmp_path):
    params = dict(TINY_BUILTIN_PARAMS.get((kind, name), {}))
    required = REQUIRED_PARAMS.get((kind, name), ())
    if "root" in required:
        params["root"] = nnunet_root(tmp_path)
    if (kind, name) == ("data_source", "datalist"):
        params["path"] = datalist_path(tmp_path)
    if (kind, name) == ("data_source", "hf_datasets"):
        params["path"] = hf_dataset_path(tmp_path)
    options = {"required_params": required}
    if kind == "metric":
        options["output_dir"] = str(tmp_path / "figures")
    if (kind, name) == ("metric", "traversal"):
        options["method"] = _MethodWithDecoder()
    report = check_component(kind, name, params, **options)
    assert report.target == BUILTINS[kind][name]
    assert report.params == report.params.__class__.model_validate(params)


class _MethodWithDecoder:
    """What the traversal metric needs from a method: a decoder(anatomy, z) (the built-in FiLM one)."""

    def __init__(self):
        from dafnet.builder import build

        self.decoder = build("decoder", "film", {}, DEFAULT_FACTS)


def test_builtin_defaults_validate_and_film_runs_at_paper_width():
    # The FiLM decoder is tiny at paper size (C = 8): check it with its defaults and C = 8.
    report = check_decoder("film", facts=DEFAULT_FACTS.with_(anatomy_channels=8, z_dim=8))
    assert report.trainable_parameters == 5841  # method.md: FiLM decoder 5,841 parameters
