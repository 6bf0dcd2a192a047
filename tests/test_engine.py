"""The training engine against a small generator/critic method with two streams.

The toy method (defined here and reused by test_export.py and test_engine_distributed.py)
has a generator (plain module built by the method) and a critic (the ``critic`` role, a
registered discriminator), four phases over two streams (``paired`` and ``unpaired``), and
records the generator/critic weights every time ``evaluation_summary`` runs, which gives the
tests the epoch-end snapshots.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import Field
from rich.console import Console
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from dafnet import interfaces as I
from dafnet.builder import build
from dafnet.config.schema import Recipe
from dafnet.errors import DafnetError
from dafnet.registry import register

SIDE = 2  # images are SIDE x SIDE, so samples are vectors of SIDE**2 features


class ToySource(I.DataSource):
    """Subjects with modality ``a`` (random) and ``b`` (a fixed function of ``a``)."""

    class Params(I.Params):
        subjects: int = Field(10, ge=1, description="number of subjects")
        slices: int = Field(2, ge=1, description="slices per subject")
        seed: int = Field(0, description="data seed")

    modalities = ("a", "b")
    class_names = ("fg",)

    @property
    def image_size(self):
        return (SIDE, SIDE)

    def load(self):
        rng = np.random.default_rng(self.params.seed)
        out = []
        for i in range(self.params.subjects):
            a = rng.uniform(-1, 1, (self.params.slices, SIDE, SIDE)).astype(np.float32)
            b = np.tanh(0.8 * a[:, ::-1, :] + 0.1).astype(np.float32)
            pos = np.arange(self.params.slices, dtype=np.float64)
            out.append(I.Subject(f"s{i:02d}", {"a": I.Volume(a, None, pos), "b": I.Volume(b, None, pos)}))
        return out


class ToyCritic(I.Discriminator):
    class Params(I.Params):
        hidden: int = Field(6, ge=1, description="hidden units")

    def __init__(self, params, facts):
        super().__init__(params, facts)
        h, w = facts.require("image_size")
        self.net = nn.Sequential(nn.Linear(h * w, params.hidden), nn.LeakyReLU(0.2), nn.Linear(params.hidden, 1))

    def forward(self, x):
        return self.net(x.flatten(1))


class Pairs(Dataset):
    def __init__(self, subjects, with_target: bool = True):
        xs = [torch.from_numpy(s.volumes["a"].image.reshape(-1, SIDE * SIDE).copy()) for s in subjects]
        ys = [torch.from_numpy(s.volumes["b"].image.reshape(-1, SIDE * SIDE).copy()) for s in subjects]
        self.x = torch.cat(xs) if xs else torch.zeros(0, SIDE * SIDE)
        self.y = torch.cat(ys) if ys else torch.zeros(0, SIDE * SIDE)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class ToyMethod(I.Method):
    roles = {"critic": I.Role("discriminator", "engine_toy_critic", "judges b images")}
    loss_weights = {"adversarial": 0.1}
    snapshots: list = []
    """Class-level record: the networks' weights at every evaluation_summary call."""
    grad_flags: list = []
    """Class-level record: (phase, generator requires_grad, critic requires_grad) per step."""

    class Params(I.Params):
        paired_fraction: float = Field(0.5, ge=0, le=1, description="training subjects in the paired stream")
        batchnorm: bool = Field(False, description="BatchNorm1d in the generator")
        hidden: int = Field(6, ge=1, description="generator hidden units")
        phases: tuple[str, ...] | None = Field(None, description="run only these phases")

    def __init__(self, params, facts, context):
        super().__init__(params, facts, context)
        n = SIDE * SIDE
        layers = [nn.Linear(n, params.hidden)]
        if params.batchnorm:
            layers.append(nn.BatchNorm1d(params.hidden))
        layers += [nn.Tanh(), nn.Linear(params.hidden, n)]
        self.generator = nn.Sequential(*layers)
        choice = self.component("critic")
        self.critic = build("discriminator", choice.name, choice.build_params, facts, "model.critic")
        self.w_adv = self.resolved_weights().get("adversarial", 0.1)

    def networks(self):
        return {"generator": self.generator, "critic": self.critic}

    def optimizer_groups(self):
        return {"generator": ["generator"], "critic": ["critic"]}

    def _record(self, phase):
        ToyMethod.grad_flags.append((phase, [p.requires_grad for p in self.generator.parameters()],
                                     [p.requires_grad for p in self.critic.parameters()]))

    def _gen(self, name, supervised):
        def step(batch, scratch):
            self._record(name)
            fake = self.generator(batch["x"])
            scratch["fake"] = fake.detach()
            adv = ((self.critic(fake) - 1) ** 2).mean()
            terms = {"adversarial": adv.detach()}
            total = self.w_adv * adv
            if supervised:
                l1 = (fake - batch["y"]).abs().mean()
                terms["l1"] = l1.detach()
                total = total + l1
            return I.LossOutput(total, terms)
        return step

    def _critic(self, name):
        def step(batch, scratch):
            self._record(name)
            real = ((self.critic(batch["y"]) - 1) ** 2).mean()
            fake = (self.critic(scratch["fake"]) ** 2).mean()
            return I.LossOutput(real + fake, {"real": real.detach(), "fake": fake.detach()})
        return step

    def phases(self):
        all_phases = [
            I.Phase("generator", "generator", "paired", self._gen("generator", True)),
            I.Phase("critic", "critic", "paired", self._critic("critic")),
            I.Phase("generator_unpaired", "generator", "unpaired", self._gen("generator_unpaired", False)),
            I.Phase("critic_unpaired", "critic", "unpaired", self._critic("critic_unpaired")),
        ]
        keep = self.params.phases
        return [p for p in all_phases if keep is None or p.name in keep]

    def summary(self):
        return [I.RoleSummary(r, type(n).__name__, "(B, 4)", sum(p.numel() for p in n.parameters()))
                for r, n in self.networks().items()]

    def train_streams(self, subjects):
        k = round(self.params.paired_fraction * len(subjects))
        return {"paired": Pairs(subjects[:k]), "unpaired": Pairs(subjects[k:])}

    def eval_dataset(self, subjects):
        return Pairs(subjects)

    def evaluation_step(self, batch):
        return {"abs_error": (self.generator(batch["x"]) - batch["y"]).abs().mean(1)}

    def evaluation_summary(self, stats):
        ToyMethod.snapshots.append({r: {k: v.detach().clone().cpu() for k, v in n.state_dict().items()}
                                    for r, n in self.networks().items()})
        mae = float(stats["abs_error"].mean())
        return {"mae": mae, "monitor": mae}


def register_toys() -> None:
    register("data_source", "engine_toy_source", ToySource)
    register("discriminator", "engine_toy_critic", ToyCritic)
    register("method", "engine_toy", ToyMethod)


def toy_recipe(tmp_path: Path | None = None, *, train=None, method=None, split=None, source=None,
               output=None) -> Recipe:
    register_toys()
    data = {"source": {"name": "engine_toy_source", "params": source or {}},
            "split": split or {"folds": 1, "train": 0.6, "validation": 0.2, "test": 0.2}}
    t = {"epochs": 2, "batch_size": 4, "lr": 1e-2, "swa_start": None, "patience": None, "log_every": 1}
    t.update(train or {})
    out = {"root": str(tmp_path or "runs"), "tensorboard": False, "figures": False}
    out.update(output or {})
    return Recipe.model_validate({"name": "toy", "method": {"name": "engine_toy", "params": method or {}},
                                  "data": data, "train": t, "output": out})


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def exported(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {r: load_file(str(run_dir / "export" / f"{r}.safetensors")) for r in ("generator", "critic")}


@pytest.fixture(autouse=True)
def _clear_records():
    ToyMethod.snapshots.clear()
    ToyMethod.grad_flags.clear()
    yield


def _fresh_weights(recipe: Recipe) -> dict:
    from accelerate.utils import set_seed

    from dafnet.assemble import build_data_source, build_method
    from dafnet.config.resolve import resolve

    recipe = resolve(recipe)
    set_seed(recipe.train.seed)
    _, facts = build_data_source(recipe)
    method = build_method(recipe, facts)
    return {r: {k: v.clone() for k, v in n.state_dict().items()} for r, n in method.networks().items()}


# ---------------------------------------------------------------------------------------------
def test_run_directory_contents(tmp_path):
    from dafnet.config.resolve import load_recipe
    from dafnet.engine import train

    console = quiet()
    recipe = toy_recipe(tmp_path, output={"tensorboard": True, "figures": True, "name": "full"})
    result = train(recipe, console=console)
    run = result.run_dir
    assert run == tmp_path / "full"
    assert load_recipe(run / "recipe.yaml").model_dump() == result_recipe_dump(run)
    meta = json.loads((run / "metadata.json").read_text())
    assert {"python", "torch", "accelerate", "dafnet"} <= set(meta["versions"])
    assert meta["seed"] == 0 and meta["processes"] == 1
    assert {c["where"] for c in meta["components"]} == {"data.source", "method", "model.critic"}
    splits = json.loads((run / "splits.json").read_text())
    everything = splits["train"] + splits["validation"] + splits["test"]
    assert sorted(everything) == [f"s{i:02d}" for i in range(10)] and len(set(everything)) == 10
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("generator/total", "generator/l1", "generator/adversarial", "critic/real", "critic/fake",
                "generator_unpaired/total", "critic_unpaired/total", "validation/monitor", "validation/mae"):
        assert col in rows[0] and float(rows[1][col]) == float(rows[1][col])
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    png = run / "figures" / "loss_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.figures == [png]
    index = json.loads((run / "export" / "dafnet_index.json").read_text())
    assert set(index["networks"]) == {"generator", "critic"}
    assert index["roles"]["critic"]["component"] == "engine_toy_critic"
    assert index["roles"]["critic"]["origin"] == "runtime"
    assert index["method"]["name"] == "engine_toy" and index["weights"]["source"] == "best"
    for role in ("generator", "critic"):
        assert (run / "export" / f"{role}.safetensors").is_file()
    assert (run / "state").is_dir() and not list(run.glob(".state*"))
    assert result.evaluated_on == "test" and set(result.summary) == {"mae", "monitor"}
    text = console.file.getvalue()
    assert "monitor" in text and str(run / "export") in text


def result_recipe_dump(run: Path) -> dict:
    return Recipe.model_validate(yaml.safe_load((run / "recipe.yaml").read_text())).model_dump()


def test_refuses_non_empty_run_dir(tmp_path):
    from dafnet.engine import train

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    with pytest.raises(DafnetError, match="not empty") as info:
        train(toy_recipe(tmp_path), run_dir=tmp_path / "taken", console=quiet())
    assert "--resume" in info.value.hint


def test_resume_is_exact(tmp_path):
    from dafnet.engine import train

    settings = dict(train={"epochs": 2, "swa_start": 1, "patience": 5, "min_delta": 0.0},
                    method={"batchnorm": True})
    straight = train(toy_recipe(tmp_path, **settings), run_dir=tmp_path / "straight", console=quiet())
    first = toy_recipe(tmp_path, train={**settings["train"], "epochs": 1}, method=settings["method"])
    train(first, run_dir=tmp_path / "resumed", console=quiet())
    resumed = train(toy_recipe(tmp_path, **settings), resume=tmp_path / "resumed", console=quiet())
    assert resumed.epochs_run == straight.epochs_run == 2
    a, b = exported(straight.run_dir), exported(resumed.run_dir)
    for role in a:
        for key in a[role]:
            assert torch.equal(a[role][key], b[role][key]), (role, key)
    for name in ("model.safetensors", "model_1.safetensors"):
        sa, sb = load_file(str(straight.run_dir / "state" / name)), load_file(str(resumed.run_dir / "state" / name))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in straight.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    with pytest.raises(DafnetError, match="already"):
        train(toy_recipe(tmp_path, **settings), resume=tmp_path / "resumed", console=quiet())
    with pytest.raises(DafnetError, match="train.lr"):
        train(toy_recipe(tmp_path, train={**settings["train"], "epochs": 3, "lr": 1e-3},
                         method=settings["method"]), resume=tmp_path / "resumed", console=quiet())


def test_freezing_each_phase_trains_only_its_group(tmp_path):
    from dafnet.engine import train

    train(toy_recipe(tmp_path, method={"phases": ["generator", "critic"]}, train={"epochs": 1}),
          run_dir=tmp_path / "both", console=quiet())
    flags = {name: (g, c) for name, g, c in ToyMethod.grad_flags}
    assert all(flags["generator"][0]) and not any(flags["generator"][1])
    assert all(flags["critic"][1]) and not any(flags["critic"][0])

    recipe = toy_recipe(tmp_path, method={"phases": ["generator_unpaired"]}, train={"epochs": 1})
    fresh = _fresh_weights(recipe)
    train(recipe, run_dir=tmp_path / "gen_only", console=quiet())
    w = exported(tmp_path / "gen_only")
    assert all(torch.equal(w["critic"][k], fresh["critic"][k]) for k in fresh["critic"])
    assert not all(torch.equal(w["generator"][k], fresh["generator"][k]) for k in fresh["generator"])


def test_lr_scale_gives_a_role_its_own_learning_rate(tmp_path):
    from types import SimpleNamespace

    from dafnet.engine import train
    from dafnet.engine.optim import build_optimizers

    nets = {"a": nn.Linear(2, 2), "b": nn.Linear(2, 2), "critic": nn.Linear(2, 1)}
    groups = {"generator": ["a", "b"], "critic": ["critic"]}

    def settings(**scale):
        return SimpleNamespace(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, lr_scale=scale)

    plain = build_optimizers(nets, groups, settings())
    assert [len(o.param_groups) for o in plain.values()] == [1, 1]
    assert len(build_optimizers(nets, groups, settings(b=1.0))["generator"].param_groups) == 1  # 1 is no scale
    scaled = build_optimizers(nets, groups, settings(b=0.1))
    gen = scaled["generator"].param_groups
    assert [g["lr"] for g in gen] == pytest.approx([1e-4, 1e-3])
    assert {id(p) for p in gen[0]["params"]} == {id(p) for p in nets["b"].parameters()}
    assert {id(p) for p in gen[1]["params"]} == {id(p) for p in nets["a"].parameters()}
    assert len(scaled["critic"].param_groups) == 1 and scaled["critic"].param_groups[0]["lr"] == 1e-3
    with pytest.raises(DafnetError, match=r"train.lr_scale names \['nope'\]") as err:
        build_optimizers(nets, groups, settings(nope=0.5))
    assert "a, b, critic" in err.value.hint
    with pytest.raises(DafnetError, match="train.lr_scale"):
        train(toy_recipe(tmp_path, train={"epochs": 1, "lr_scale": {"aligner": 0.1}}), run_dir=tmp_path / "bad",
              console=quiet())
    assert not (tmp_path / "bad").exists()
    # a scaled role moves less in the same run: its first Adam step is lr x factor per parameter
    train(toy_recipe(tmp_path, train={"epochs": 1, "iterations_per_epoch": 1, "lr_scale": {"critic": 0.01}}),
          run_dir=tmp_path / "scaled", console=quiet())
    train(toy_recipe(tmp_path, train={"epochs": 1, "iterations_per_epoch": 1}), run_dir=tmp_path / "same",
          console=quiet())
    fresh = _fresh_weights(toy_recipe(tmp_path))
    moved = {run: max((exported(tmp_path / run)["critic"][k] - fresh["critic"][k]).abs().max().item()
                      for k in fresh["critic"]) for run in ("scaled", "same")}
    assert 0 < moved["scaled"] < moved["same"] / 20


class CriticOnly(ToyMethod):
    """The critic judges generator outputs that are NOT detached; only the critic phase runs."""

    def phases(self):
        def step(batch, scratch):
            self._record("critic_only")
            fake = self.generator(batch["x"])
            loss = ((self.critic(batch["y"]) - 1) ** 2).mean() + (self.critic(fake) ** 2).mean()
            return I.LossOutput(loss, {})
        return [I.Phase("critic_only", "critic", "paired", step)]


def test_critic_phase_alone_leaves_generator_unchanged(tmp_path):
    from dafnet.engine import train

    register_toys()
    register("method", "engine_toy_critic_only", CriticOnly)
    recipe = toy_recipe(tmp_path, train={"epochs": 1})
    recipe = recipe.model_copy(update={"method": recipe.method.model_copy(update={"name": "engine_toy_critic_only"})})
    fresh = _fresh_weights(recipe)
    train(recipe, run_dir=tmp_path / "critic_only", console=quiet())
    w = exported(tmp_path / "critic_only")
    assert all(torch.equal(w["generator"][k], fresh["generator"][k]) for k in fresh["generator"])
    assert not all(torch.equal(w["critic"][k], fresh["critic"][k]) for k in fresh["critic"])
    assert all(g is False for _, gs, _ in ToyMethod.grad_flags for g in gs)


def test_phases_of_empty_streams_are_skipped(tmp_path):
    from dafnet.engine import train

    console = quiet()
    result = train(toy_recipe(tmp_path, method={"paired_fraction": 1.0}), console=console)
    assert "generator_unpaired" in console.file.getvalue() and "skipping" in console.file.getvalue()
    assert not {k for k in result.history[0] if k.startswith(("generator_unpaired", "critic_unpaired"))}
    assert {"generator/total", "critic/total"} <= set(result.history[0])
    assert not any(name.endswith("unpaired") for name, _, _ in ToyMethod.grad_flags)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    from dafnet.engine import train

    split = {"folds": 1, "train": 1.0, "validation": 0.0, "test": 0.0}
    src = {"subjects": 8, "slices": 2}  # 16 samples; paired 8 + unpaired 8
    big = train(toy_recipe(tmp_path, split=split, source=src, train={"batch_size": 4, "epochs": 2}),
                run_dir=tmp_path / "big", console=quiet())
    acc = train(toy_recipe(tmp_path, split=split, source=src,
                           train={"batch_size": 2, "gradient_accumulation_steps": 2, "epochs": 2}),
                run_dir=tmp_path / "acc", console=quiet())
    small = train(toy_recipe(tmp_path, split=split, source=src, train={"batch_size": 2, "epochs": 2}),
                  run_dir=tmp_path / "small", console=quiet())
    assert big.weights == acc.weights == "last"
    a, b, c = exported(big.run_dir), exported(acc.run_dir), exported(small.run_dir)
    for role in a:
        for key in a[role]:
            torch.testing.assert_close(a[role][key], b[role][key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(a[r][k], c[r][k], atol=1e-4) for r in a for k in a[r])


def test_early_stopping_triggers_and_exports_the_best_epoch(tmp_path):
    from dafnet.engine import train

    result = train(toy_recipe(tmp_path, train={"epochs": 10, "patience": 2, "min_delta": 100.0}),
                   console=quiet())
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert result.weights == "best"
    w = exported(result.run_dir)
    # the weights kept are those of the lowest monitor validated (early stopping's min_delta does not apply)
    lowest = min(range(3), key=lambda e: result.history[e]["validation/monitor"])
    best = ToyMethod.snapshots[lowest]
    for role in w:
        assert all(torch.equal(w[role][k], best[role][k]) for k in w[role])
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["stopped_early"] and summary["best_epoch"] == 1 and summary["weights"]["epoch"] == lowest + 1
    with pytest.raises(DafnetError, match="stopped early") as info:
        train(toy_recipe(tmp_path, train={"epochs": 10, "patience": 2, "min_delta": 100.0}),
              resume=result.run_dir, console=quiet())
    assert "train.patience" in info.value.hint
    more = train(toy_recipe(tmp_path, train={"epochs": 10, "patience": 3, "min_delta": 100.0}),
                 resume=result.run_dir, console=quiet())
    assert more.stopped_early and more.epochs_run == 4 and more.best_epoch == 1


def test_swa_is_the_uniform_average_of_epoch_end_snapshots(tmp_path):
    from dafnet.engine import train

    result = train(toy_recipe(tmp_path, train={"epochs": 4, "swa_start": 2, "validate_swa": False}), console=quiet())
    assert result.weights == "swa"
    snaps = ToyMethod.snapshots[:4]  # validations after epochs 1..4 (live weights: validate_swa false)
    w = exported(result.run_dir)
    for role in w:
        for key in w[role]:
            manual = torch.stack([s[role][key] for s in snaps[1:]]).mean(0)
            torch.testing.assert_close(w[role][key], manual, rtol=1e-5, atol=1e-6)
    index = json.loads((result.run_dir / "export" / "dafnet_index.json").read_text())
    assert index["weights"] == {"source": "swa", "snapshots": 3, "epochs": [2, 4]}



def test_validation_evaluates_the_swa_average_and_training_continues_from_the_live_weights(tmp_path):
    """With validate_swa (the default) the validations from swa_start on see the running SWA average
    (BatchNorm statistics recomputed), early stopping's best weights are those validated, and the
    live weights, buffers included, train on exactly as with validate_swa false."""
    from dafnet.engine import train

    settings = {"epochs": 4, "swa_start": 2, "patience": 10, "min_delta": 0.0}
    live_run = train(toy_recipe(tmp_path, train={**settings, "validate_swa": False}, method={"batchnorm": True}),
                     run_dir=tmp_path / "live", console=quiet())
    live = ToyMethod.snapshots[:4]  # the live weights after epochs 1..4
    ToyMethod.snapshots.clear()
    swa_run = train(toy_recipe(tmp_path, train=settings, method={"batchnorm": True}),
                    run_dir=tmp_path / "swa", console=quiet())
    validated = ToyMethod.snapshots[:4]

    for role in live[0]:  # epoch 1 is before swa_start: the live weights
        assert all(torch.equal(validated[0][role][k], live[0][role][k]) for k in live[0][role])
    for epoch in (2, 3, 4):
        for role, weights in validated[epoch - 1].items():
            for key in ("0.weight", "0.bias", "3.weight") if role == "generator" else ("net.0.weight",):
                average = torch.stack([s[role][key] for s in live[1:epoch]]).mean(0)
                torch.testing.assert_close(weights[key], average, rtol=1e-5, atol=1e-6)
        # BatchNorm statistics were recomputed for the average, not the live ones
        assert not torch.equal(validated[epoch - 1]["generator"]["1.running_mean"],
                               live[epoch - 1]["generator"]["1.running_mean"])
    rows, live_rows = swa_run.history, live_run.history
    assert "validated_swa" not in rows[0] and all(r["validated_swa"] == 1.0 for r in rows[1:])
    assert rows[2]["validation/monitor"] != live_rows[2]["validation/monitor"]

    def training_columns(history):
        skipped = ("seconds", "validated_swa")
        return [{k: v for k, v in r.items() if not k.startswith("validation/") and k not in skipped} for r in history]

    assert training_columns(rows) == training_columns(live_rows)
    for name in ("model.safetensors", "model_1.safetensors"):  # live weights and buffers at the end
        a = load_file(str(live_run.run_dir / "state" / name))
        b = load_file(str(swa_run.run_dir / "state" / name))
        assert all(torch.equal(a[k], b[k]) for k in a)
    best_epoch = min(range(4), key=lambda e: rows[e]["validation/monitor"]) + 1
    assert swa_run.best_epoch == best_epoch
    best = torch.load(swa_run.run_dir / "state" / "custom_checkpoint_2.pkl", weights_only=False)
    assert best["epoch"] == best_epoch
    for role, weights in best["weights"].items():
        assert all(torch.equal(weights[k], validated[best_epoch - 1][role][k]) for k in weights)


class ScriptedMonitor(ToyMethod):
    """The toy method whose validations score 0.5, 0.2, 0.4, 0.3 (then 0.0): epoch 2 is the best."""

    script = [0.5, 0.2, 0.4, 0.3]

    def evaluation_summary(self, stats):
        summary = super().evaluation_summary(stats)
        calls = len(ToyMethod.snapshots)
        return {**summary, "monitor": self.script[calls - 1] if calls <= len(self.script) else 0.0}


def test_export_weights_best_exports_the_best_validated_swa_average(tmp_path):
    """train.export_weights: best exports the weights of the best validated epoch (here the SWA average of
    epoch 2 alone, with its recomputed BatchNorm statistics) instead of the average of every snapshot."""
    from dafnet.engine import train

    register_toys()
    register("method", "engine_toy_scripted", ScriptedMonitor)
    settings = {"epochs": 4, "swa_start": 2, "patience": 10, "min_delta": 0.0}
    recipe = toy_recipe(tmp_path, train={**settings, "export_weights": "best"}, method={"batchnorm": True})
    recipe = recipe.model_copy(update={"method": recipe.method.model_copy(update={"name": "engine_toy_scripted"})})
    ToyMethod.snapshots.clear()
    result = train(recipe, run_dir=tmp_path / "best", console=quiet())
    validated = ToyMethod.snapshots[:4]
    assert result.weights == "best" and result.best_epoch == 2
    w = exported(result.run_dir)
    for role in w:
        assert all(torch.equal(w[role][k], validated[1][role][k]) for k in w[role])
    assert not torch.equal(w["generator"]["0.weight"], validated[3]["generator"]["0.weight"])  # not the final average
    index = json.loads((result.run_dir / "export" / "dafnet_index.json").read_text())
    assert index["weights"] == {"source": "best", "epoch": 2, "averaged": True}
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["weights"] == index["weights"]

    ToyMethod.snapshots.clear()
    final = train(recipe.model_copy(update={"train": recipe.train.model_copy(update={"export_weights": "final"})}),
                  run_dir=tmp_path / "final", console=quiet())  # the default: the average of epochs 2-4
    assert final.weights == "swa" and final.best_epoch == 2

    # "best" is the lowest monitor validated, not early stopping's best (which needs min_delta of improvement)
    ToyMethod.snapshots.clear()
    tolerant = train(recipe.model_copy(update={"train": recipe.train.model_copy(update={"min_delta": 0.5})}),
                     run_dir=tmp_path / "tolerant", console=quiet())
    assert tolerant.best_epoch == 1  # 0.2 is not 0.5 below 0.5: early stopping saw no improvement
    w = exported(tolerant.run_dir)
    assert json.loads((tolerant.run_dir / "summary.json").read_text())["weights"]["epoch"] == 2
    assert all(torch.equal(w[role][k], ToyMethod.snapshots[1][role][k]) for role in w for k in w[role])


def test_a_finished_run_is_exported_again_with_other_export_weights_without_training(tmp_path):
    from dafnet.engine import train

    register_toys()
    register("method", "engine_toy_scripted", ScriptedMonitor)
    recipe = toy_recipe(tmp_path, train={"epochs": 4, "swa_start": 2, "patience": 10, "min_delta": 0.0},
                        method={"batchnorm": True})
    recipe = recipe.model_copy(update={"method": recipe.method.model_copy(update={"name": "engine_toy_scripted"})})
    ToyMethod.snapshots.clear()
    first = train(recipe, run_dir=tmp_path / "run", console=quiet())
    validated = ToyMethod.snapshots[:4]
    log_before = (first.run_dir / "log.csv").read_text()
    assert first.weights == "swa"
    console = quiet()
    again = train(recipe.model_copy(update={"train": recipe.train.model_copy(update={"export_weights": "best"})}),
                  resume=first.run_dir, console=console)
    assert "nothing is trained" in console.file.getvalue()
    assert again.weights == "best" and again.epochs_run == 4 and (first.run_dir / "log.csv").read_text() == log_before
    w = exported(first.run_dir)
    assert all(torch.equal(w[role][k], validated[1][role][k]) for role in w for k in w[role])
    summary = json.loads((first.run_dir / "summary.json").read_text())
    assert summary["export_weights"] == "best" and summary["weights"]["epoch"] == 2
    with pytest.raises(DafnetError, match="already trained all 4 epochs"):  # the same choice again: nothing to do
        train(recipe.model_copy(update={"train": recipe.train.model_copy(update={"export_weights": "best"})}),
              resume=first.run_dir, console=quiet())


class Declining(ScriptedMonitor):
    """Validations 0.3, 0.2, 0.3, 0.4: best at epoch 2, the last 0.2 above it."""

    script = [0.3, 0.2, 0.3, 0.4]


def test_a_late_decline_is_recorded_and_warned_when_the_final_weights_are_exported(tmp_path):
    from dafnet.engine import train

    register_toys()
    register("method", "engine_toy_declining", Declining)
    recipe = toy_recipe(tmp_path, train={"epochs": 4, "swa_start": 2, "patience": 10, "min_delta": 0.0})
    recipe = recipe.model_copy(update={"method": recipe.method.model_copy(update={"name": "engine_toy_declining"})})
    ToyMethod.snapshots.clear()
    console = quiet()
    result = train(recipe, run_dir=tmp_path / "final", console=console)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["validation_decline"] == {"best_epoch": 2, "best_monitor": 0.2, "last_epoch": 4,
                                             "last_monitor": 0.4}
    text = " ".join(console.file.getvalue().split())
    assert "validation declined late" in text and "train.export_weights=best" in text
    ToyMethod.snapshots.clear()
    best = train(recipe.model_copy(update={"train": recipe.train.model_copy(update={"export_weights": "best"})}),
                 run_dir=tmp_path / "best", console=quiet())
    assert "validation_decline" not in json.loads((best.run_dir / "summary.json").read_text())
    ToyMethod.snapshots.clear()
    quiet_run = train(recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"health": recipe.train.health.model_copy(update={"decline_warning": 0.25})})}),
        run_dir=tmp_path / "threshold", console=quiet())  # 0.2 is below a 0.25 threshold
    assert "validation_decline" not in json.loads((quiet_run.run_dir / "summary.json").read_text())


def test_swa_recomputes_batchnorm_statistics(tmp_path):
    from dafnet.engine import train

    src = {"subjects": 10, "slices": 2}
    split = {"folds": 1, "train": 0.8, "validation": 0.0, "test": 0.2}  # 8 subjects, 16 samples
    result = train(toy_recipe(tmp_path, source=src, split=split, method={"batchnorm": True, "paired_fraction": 1.0},
                              train={"epochs": 2, "swa_start": 1}), console=quiet())
    w = exported(result.run_dir)["generator"]
    from dafnet.assemble import build_data_source
    from dafnet.data.splits import split_data

    recipe = toy_recipe(tmp_path, source=src, split=split)
    source, _ = build_data_source(recipe)
    subjects = {s.id: s for s in source.load()}
    ids = split_data(list(subjects.values()), recipe.data)["train"]
    x = Pairs([subjects[i] for i in ids]).x
    pre_bn = x @ w["0.weight"].T + w["0.bias"]
    # 16 samples in 4 equal batches: the cumulative average of batch means is the data mean
    torch.testing.assert_close(w["1.running_mean"], pre_bn.mean(0), rtol=1e-5, atol=1e-6)
    assert int(w["1.num_batches_tracked"]) == 4


def test_swa_skips_a_network_without_parameters():
    """An identity aligner has no parameters: AveragedModel cannot update an empty list, so the
    averager leaves such a network alone and averages the others."""
    from dafnet.engine.swa import WeightAverager

    nets = {"linear": nn.Linear(2, 1), "identity": nn.Identity()}
    averager = WeightAverager(nets, start=1)
    for epoch, value in ((1, 1.0), (2, 3.0)):
        with torch.no_grad():
            nets["linear"].weight.fill_(value)
        assert averager.update(epoch)
    averager.copy_to_networks()
    assert set(averager.averages) == {"linear"} and averager.snapshots == 2
    assert torch.all(nets["linear"].weight == 2.0)


def test_non_finite_loss_is_a_clear_error(tmp_path):
    from dafnet.engine import train

    with pytest.raises(DafnetError, match="non-finite loss"):
        train(toy_recipe(tmp_path, train={"lr": 1e30, "epochs": 3}, source={"subjects": 10}), console=quiet())


def test_bf16_autocast_and_a_second_run_with_other_settings(tmp_path):
    from dafnet.engine import train

    fp32 = train(toy_recipe(tmp_path, train={"epochs": 1, "cpu": True}), run_dir=tmp_path / "fp32", console=quiet())
    bf16 = train(toy_recipe(tmp_path, train={"epochs": 1, "cpu": True, "mixed_precision": "bf16"}),
                 run_dir=tmp_path / "bf16", console=quiet())
    meta = json.loads((bf16.run_dir / "metadata.json").read_text())
    assert meta["mixed_precision"] == "bf16"
    assert all(np.isfinite(v) for v in bf16.history[0].values())
    # bf16 rounding changes the numbers, but not by much after one epoch
    assert bf16.history[0]["generator/total"] == pytest.approx(fp32.history[0]["generator/total"], rel=0.05)
    assert bf16.history[0]["generator/total"] != fp32.history[0]["generator/total"]


def test_what_a_resume_may_not_change_is_marked_in_the_schema():
    from pydantic import BaseModel

    from dafnet.config.schema import FIXED_ON_RESUME, TrainConfig, fixed_on_resume
    from dafnet.engine.resume import RESUME_FIXED

    train_fixed = ("batch_size", "lr", "lr_scale", "betas", "weight_decay", "iterations_per_epoch",
                   "gradient_accumulation_steps", "seed", "swa_start", "validate_swa", "min_delta", "validate_every",
                   "mixed_precision")
    assert RESUME_FIXED == fixed_on_resume()
    assert set(RESUME_FIXED) == {"method", "model", "data", "losses"} | {f"train.{k}" for k in train_fixed}
    # the refusal's hint says so
    may_change = {"epochs", "patience", "export_weights", "log_every", "cpu", "memory_format", "compile", "health"}
    assert may_change.isdisjoint(train_fixed) and may_change | set(train_fixed) == set(TrainConfig.model_fields), \
        "a new train field: mark it FIXED_ON_RESUME or name it in resume.py's hint and docs/engine.md"

    class Inner(BaseModel):
        a: int = Field(0, json_schema_extra=FIXED_ON_RESUME)
        b: int = 0

    class Outer(BaseModel):
        whole: Inner = Field(default_factory=Inner, json_schema_extra=FIXED_ON_RESUME)
        part: Inner = Field(default_factory=Inner)
        c: int = 0

    assert fixed_on_resume(Outer) == ("whole", "part.a")


def test_resume_checks_the_run_recipe_against_the_state_and_takes_overrides(tmp_path):
    import yaml

    from dafnet.cli.app import main
    from dafnet.engine import train

    run = tmp_path / "run"
    train(toy_recipe(tmp_path, train={"epochs": 1}, method={"hidden": 5}), run_dir=run, console=quiet())
    assert (run / "state" / "recipe.yaml").is_file()
    original = (run / "recipe.yaml").read_text()
    for section, key, value in (("train", "lr", 0.5), ("train", "validate_swa", False),
                                ("method", "params", {"hidden": 7})):
        edited = yaml.safe_load(original)
        edited[section][key] = value
        edited["train"]["epochs"] = 2
        (run / "recipe.yaml").write_text(yaml.safe_dump(edited))  # an edit behind the state's back
        with pytest.raises(DafnetError, match=f"changes {section}") as info:
            train(resume=run, console=quiet())
        assert "state/recipe.yaml" in info.value.message
    (run / "recipe.yaml").write_text(original)
    with pytest.raises(SystemExit) as exc:  # a recipe file cannot follow --resume
        main(["train", "--resume", str(run), "recipes/quickstart.yaml"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:  # nothing left to train: the hint says how to go on
        main(["train", "--resume", str(run)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(run), "train.epochs=2"])
    assert not exc.value.code
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["epochs"] == 2
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2


def test_a_damaged_state_is_a_clear_error(tmp_path):
    from dafnet.engine import train

    run = tmp_path / "run"
    train(toy_recipe(tmp_path, train={"epochs": 1}), run_dir=run, console=quiet())
    weights = run / "state" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DafnetError, match="resume state in .* cannot be read"):
        train(toy_recipe(tmp_path, train={"epochs": 2}), resume=run, console=quiet())


def test_a_new_run_stopped_before_its_first_state_leaves_no_folder(tmp_path, monkeypatch):
    from dafnet.engine import session, train

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(session.TrainingSession, "fit", interrupted)
    console = quiet()
    with pytest.raises(KeyboardInterrupt):
        train(toy_recipe(tmp_path), run_dir=tmp_path / "new", console=console)
    assert not (tmp_path / "new").exists()
    assert "nothing kept" in console.file.getvalue()
    (tmp_path / "empty").mkdir()  # a folder that was there, empty, stays (empty)
    with pytest.raises(KeyboardInterrupt):
        train(toy_recipe(tmp_path), run_dir=tmp_path / "empty", console=console)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_an_interrupted_run_with_a_state_says_how_to_resume(tmp_path, monkeypatch):
    from dafnet.engine import session, train

    run = tmp_path / "run"
    train(toy_recipe(tmp_path, train={"epochs": 1}), run_dir=run, console=quiet())

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(session.TrainingSession, "fit", interrupted)
    console = quiet()
    with pytest.raises(KeyboardInterrupt):
        train(toy_recipe(tmp_path, train={"epochs": 2}), resume=run, console=console)
    assert (run / "state").is_dir()
    assert f"dafnet train --resume {run}" in " ".join(console.file.getvalue().split())
